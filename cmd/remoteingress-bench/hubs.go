package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The several-hubs row (README "Several hubs"), on the tunnel-2hubs set-up:
// two hub processes with the same allowed list, one edge with startEdge
// hubs [hubA, hubB] in spread mode, the same target.
//
//   - Spread: the connection rate (openMany, as the connection-rate row)
//     and the N-stream throughput (as the N-stream row) through the
//     two-hub edge and through the tunnel set-up's one-hub edge, in
//     alternating rounds (one, two, two, one, ...); the ratios are
//     two-hubs/one-hub of the totals. How the streams were shared is read
//     from each hub's streamOpened events (each hub is its own process).
//   - Failover: under a steady load (cfg.HubsLoad clients, each doing
//     connect, one echo round trip, close, every 5 ms), hub B is killed
//     with SIGKILL; the row reports the time from the kill to the edge's
//     tunnelDisconnected for hub B, the client connections that failed
//     from the kill until the restart and those in flight at the kill.
//     Hub B is then started again (a new process on its tunnel port) and
//     the row reports the time from its startHub answer to the edge's
//     tunnelConnected for it (bounded below by the edge's reconnect
//     backoff: 1 s doubling, jittered). Last, a graceful stopHub of hub B
//     under the same load: the connections that failed (expected 0); hub B
//     is started again in the same process after it.

// loadPace is the pause of each failover-load client between connections.
const loadPace = 5 * time.Millisecond

// loadFailure is one failed connection of the failover load.
type loadFailure struct {
	started, failed time.Time
	err             string
}

// steadyLoad is the failover row's clients.
type steadyLoad struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	inFlight atomic.Int64
	mu       sync.Mutex
	done     []time.Time // when each successful connection was closed
	failures []loadFailure
}

// startLoad starts n clients against addr.
func startLoad(ctx context.Context, addr string, n int) *steadyLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &steadyLoad{cancel: cancel}
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				l.inFlight.Add(1)
				c, err := openEcho(ctx, addr)
				if err == nil {
					c.Close()
				}
				l.inFlight.Add(-1)
				now := time.Now()
				l.mu.Lock()
				if err == nil {
					l.done = append(l.done, now)
				} else if ctx.Err() == nil {
					l.failures = append(l.failures, loadFailure{started: t0, failed: now, err: err.Error()})
				}
				l.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(loadPace):
				}
			}
		}()
	}
	return l
}

// stop ends the load and waits for its clients.
func (l *steadyLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// between counts the successful and the failed connections that ended in
// [from, to), and returns the failures' errors.
func (l *steadyLoad) between(from, to time.Time) (ok, failed int, errs []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := func(t time.Time) bool { return !t.Before(from) && t.Before(to) }
	for _, t := range l.done {
		if in(t) {
			ok++
		}
	}
	for _, f := range l.failures {
		if in(f.failed) {
			failed++
			errs = append(errs, fmt.Sprintf("started %+.1f ms, failed %+.1f ms from the phase's start: %s", ms(f.started.Sub(from)), ms(f.failed.Sub(from)), f.err))
		}
	}
	return ok, failed, errs
}

// openedPerHub is each current hub's streamOpened count.
func openedPerHub(m *mode) []int64 {
	out := make([]int64, len(m.hubs))
	for i, h := range m.hubs {
		out[i] = h.eventCount("streamOpened")
	}
	return out
}

// waitOpened waits (up to 10 s) until the hubs' streamOpened counts have
// grown by want since before, and returns the growth per hub.
func waitOpened(m *mode, before []int64, want int64) []int64 {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sum int64
		now := openedPerHub(m)
		for i := range now {
			now[i] -= before[i]
			sum += now[i]
		}
		if sum >= want || time.Now().After(deadline) {
			return now
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// busierShare is the largest count's share of the total, in percent.
func busierShare(counts []int64) float64 {
	var sum, top int64
	for _, c := range counts {
		sum += c
		top = max(top, c)
	}
	if sum == 0 {
		return 0
	}
	return 100 * float64(top) / float64(sum)
}

// addCounts adds b to a per index.
func addCounts(a, b []int64) []int64 {
	if a == nil {
		a = make([]int64, len(b))
	}
	for i := range b {
		a[i] += b[i]
	}
	return a
}

// measureHubs is the several-hubs row (tunnel only): one is the tunnel
// set-up (one hub), the two-hub set-up is b.hubMode.
func (b *bench) measureHubs(one *mode) error {
	two := b.hubMode
	if one.hub == nil || two == nil {
		return nil
	}
	if err := b.hubsSpread(one, two); err != nil {
		return err
	}
	if err := two.settle(20 * time.Second); err != nil {
		return err
	}
	return b.hubsFailover(two)
}

// hubsSpread is the spread half of the row.
func (b *bench) hubsSpread(one, two *mode) error {
	type acc struct {
		conns, streamBytes int64
		connSeconds        float64
		streamSeconds      float64
		ratePerRound       []float64
		gbpsPerRound       []float64
		connsPerHub        []int64 // the two-hub set-up's conn-rate streams by hub
		streamsPerHub      []int64 // its N-stream streams by hub
		roundsConnsPerHub  [][]int64
		roundsStreamsByHub [][]int64
		edgeHubsSample     []any // the edge's status hubs[] in the middle of each N-stream transfer
	}
	res := map[string]*acc{one.name: {}, two.name: {}}
	for round := 1; round <= b.cfg.HubsRounds; round++ {
		order := []*mode{one, two}
		if round%2 == 0 {
			order = []*mode{two, one}
		}
		for _, m := range order {
			if err := b.ctx.Err(); err != nil {
				return err
			}
			a := res[m.name]
			b.logf("  several hubs, round %d of %d: %s: connection rate, %d streams", round, b.cfg.HubsRounds, m.name, b.cfg.Streams)
			if err := m.settle(20 * time.Second); err != nil {
				return err
			}
			before := openedPerHub(m)
			start := time.Now()
			r := openMany(b.ctx, m.addr, b.cfg.Conns, b.cfg.Workers, false)
			elapsed := time.Since(start)
			if r.failures > 0 || r.made == 0 {
				return fmt.Errorf("%s: %d of %d connections failed (first: %v)", m.name, r.failures, r.made+r.failures, r.firstErr)
			}
			a.conns += r.made
			a.connSeconds += elapsed.Seconds()
			a.ratePerRound = append(a.ratePerRound, float64(r.made)/elapsed.Seconds())
			if m == two {
				per := waitOpened(m, before, r.made)
				a.connsPerHub = addCounts(a.connsPerHub, per)
				a.roundsConnsPerHub = append(a.roundsConnsPerHub, per)
			}

			if err := m.settle(20 * time.Second); err != nil {
				return err
			}
			before = openedPerHub(m)
			var sample any
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				if m != two {
					return
				}
				time.Sleep(b.cfg.Duration / 2)
				if raw, err := m.edge.call("getEdgeStatus", map[string]any{}, 10*time.Second); err == nil {
					var st struct {
						Hubs json.RawMessage `json:"hubs"`
					}
					if json.Unmarshal(raw, &st) == nil {
						sample = st.Hubs
					}
				}
			}()
			n, d, _, err := nStreamsUp(b.ctx, m.addr, b.cfg.Streams, b.cfg.Duration)
			<-sampled
			if err != nil {
				return fmt.Errorf("%s, %d streams: %w", m.name, b.cfg.Streams, err)
			}
			a.streamBytes += n
			a.streamSeconds += d.Seconds()
			a.gbpsPerRound = append(a.gbpsPerRound, gbps(n, d))
			if m == two {
				per := waitOpened(m, before, int64(b.cfg.Streams))
				a.streamsPerHub = addCounts(a.streamsPerHub, per)
				a.roundsStreamsByHub = append(a.roundsStreamsByHub, per)
				a.edgeHubsSample = append(a.edgeHubsSample, sample)
			}
		}
	}
	o, t := res[one.name], res[two.name]
	rate1, rate2 := float64(o.conns)/o.connSeconds, float64(t.conns)/t.connSeconds
	g1 := gbps(o.streamBytes, time.Duration(o.streamSeconds*float64(time.Second)))
	g2 := gbps(t.streamBytes, time.Duration(t.streamSeconds*float64(time.Second)))
	b.res.set("hubs_conn_rate_one", modeTunnel, rate1)
	b.res.set("hubs_conn_rate_two", modeTunnel, rate2)
	b.res.set("hubs_conn_rate_ratio", modeTunnel, rate2/rate1)
	b.res.set("hubs_streams_one_gbps", modeTunnel, g1)
	b.res.set("hubs_streams_two_gbps", modeTunnel, g2)
	b.res.set("hubs_streams_ratio", modeTunnel, g2/g1)
	b.res.set("hubs_conn_busier_pct", modeTunnel, busierShare(t.connsPerHub))
	b.res.set("hubs_streams_busier_pct", modeTunnel, busierShare(t.streamsPerHub))
	labels := make([]string, len(two.hubs))
	for i, h := range two.hubs {
		labels[i] = h.label
	}
	b.res.detail(modeTunnel, "hubsSpread", map[string]any{
		"oneHubSetup": one.name, "twoHubSetup": two.name, "hubs": two.hubAddrs, "hubLabels": labels, "rounds": b.cfg.HubsRounds,
		"order":                        "per round: connection rate then N-stream throughput on one set-up, then the other; one hub first in odd rounds, two hubs first in even rounds",
		"connectionsPerMeasurement":    b.cfg.Conns,
		"workers":                      b.cfg.Workers,
		"streams":                      b.cfg.Streams,
		"oneHubConnRatePerRound":       o.ratePerRound,
		"twoHubsConnRatePerRound":      t.ratePerRound,
		"oneHubGbpsPerRound":           o.gbpsPerRound,
		"twoHubsGbpsPerRound":          t.gbpsPerRound,
		"connRateStreamsPerHub":        t.connsPerHub,
		"connRateStreamsPerHubByRound": t.roundsConnsPerHub,
		"nStreamsPerHub":               t.streamsPerHub,
		"nStreamsPerHubByRound":        t.roundsStreamsByHub,
		"edgeStatusHubsMidTransfer":    t.edgeHubsSample,
		"streamsCountedFrom":           "each hub process's streamOpened events",
		"tunnelConnections":            "the binary's default on each edge; the two-hub edge holds that many to each hub",
	})
	return nil
}

// hubsFailover is the failover half of the row: kill -9 of hub B, its
// restart, a stopHub of it.
func (b *bench) hubsFailover(two *mode) error {
	const victimIdx = 1
	victim, victimAddr := two.hubs[victimIdx], two.hubAddrs[victimIdx]
	phase := b.cfg.HubsLoadDur
	// The edge's log of the outages the bench causes is expected.
	two.edge.stderr.expect(`msg="tunnel disconnected"`, `msg="tunnel connect failed"`)
	load := startLoad(b.ctx, two.addr, b.cfg.HubsLoad)
	stopped := false
	defer func() {
		if !stopped {
			load.stop()
		}
	}()
	begin := time.Now()
	b.logf("  several hubs: failover: %d clients; kill -9 of %s in %v", b.cfg.HubsLoad, victim.label, phase)
	if sleepCtx(b.ctx, phase) != nil {
		return b.ctx.Err()
	}

	inFlight := load.inFlight.Load()
	victimOpen := victim.eventCount("streamOpened") - victim.eventCount("streamClosed")
	victimOpened0 := victim.eventCount("streamOpened")
	killAt, err := victim.kill()
	if err != nil {
		return err
	}
	noticeAt, err := two.edge.hubEventAfter("tunnelDisconnected", victimAddr, killAt.Add(-time.Millisecond), 40*time.Second)
	if err != nil {
		return err
	}
	notice := noticeAt.Sub(killAt)
	b.logf("  several hubs: the edge noticed the kill in %.2f ms", ms(notice))
	if sleepCtx(b.ctx, phase) != nil {
		return b.ctx.Err()
	}

	// Start hub B again on its tunnel port.
	restartAt := time.Now()
	nh, _, _, err := startHubProc(b.kids, b.cfg.Bin, victim.label+"-restarted", two.secret, two.hubPorts[victimIdx], false)
	if err != nil {
		return fmt.Errorf("restarting %s: %w", victim.label, err)
	}
	listeningAt := time.Now()
	two.hubs[victimIdx] = nh
	two.allHubs = append(two.allHubs, nh)
	for i, p := range two.procs {
		if p == victim.child {
			two.procs[i] = nh.child
		}
	}
	connectedAt, err := two.edge.hubEventAfter("tunnelConnected", victimAddr, restartAt, 60*time.Second)
	if err != nil {
		return err
	}
	reconnect := connectedAt.Sub(listeningAt)
	b.logf("  several hubs: %s restarted; the edge connected %.0f ms after its startHub answer", victim.label, ms(reconnect))
	opened0 := nh.eventCount("streamOpened")
	if sleepCtx(b.ctx, phase) != nil {
		return b.ctx.Err()
	}
	restartedStreams := nh.eventCount("streamOpened") - opened0

	// A graceful stopHub of hub B under the same load, then startHub again.
	stopAt := time.Now()
	stopStart := time.Now()
	if _, err := nh.call("stopHub", map[string]any{}, 20*time.Second); err != nil {
		return err
	}
	stopAnswer := time.Since(stopStart)
	stopNotice := -1.0
	if at, err := two.edge.hubEventAfter("tunnelDisconnected", victimAddr, stopAt, 10*time.Second); err == nil {
		stopNotice = ms(at.Sub(stopAt))
	} else {
		b.res.problem("several hubs, stopHub: %v", err)
	}
	if sleepCtx(b.ctx, phase) != nil {
		return b.ctx.Err()
	}
	stopEnd := time.Now()
	load.stop()
	stopped = true
	end := time.Now()

	againAt := time.Now()
	var againErr error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, againErr = nh.call("startHub", map[string]any{"tunnelPort": two.hubPorts[victimIdx], "targetHost": "127.0.0.2", "listenHost": "127.0.0.1"}, 10*time.Second)
		if againErr == nil || time.Now().After(deadline) {
			break
		}
	}
	againMs := -1.0
	if againErr != nil {
		b.res.problem("several hubs: startHub after stopHub: %v", againErr)
	} else if at, err := two.edge.hubEventAfter("tunnelConnected", victimAddr, againAt, 60*time.Second); err != nil {
		b.res.problem("several hubs: %v", err)
	} else {
		againMs = ms(at.Sub(againAt))
	}

	var failedStartedBeforeKill, failedStartedBeforeNotice int
	load.mu.Lock()
	for _, f := range load.failures {
		if !f.failed.Before(killAt) && f.failed.Before(restartAt) {
			if f.started.Before(killAt) {
				failedStartedBeforeKill++
			} else if f.started.Before(noticeAt) {
				failedStartedBeforeNotice++
			}
		}
	}
	load.mu.Unlock()
	okBefore, failBefore, errsBefore := load.between(begin, killAt)
	okKill, failKill, errsKill := load.between(killAt, restartAt)
	okRestart, failRestart, errsRestart := load.between(restartAt, stopAt)
	okStop, failStop, errsStop := load.between(stopAt, end)
	for _, p := range []struct {
		what         string
		failed, made int
		errs         []string
	}{{"before the kill", failBefore, okBefore, errsBefore}, {"after the restart", failRestart, okRestart, errsRestart}, {"around the stopHub", failStop, okStop, errsStop}} {
		if p.failed > 0 {
			b.res.problem("several hubs, %s: %d of %d client connections failed (first: %s)", p.what, p.failed, p.failed+p.made, p.errs[0])
		}
	}
	if restartedStreams == 0 {
		b.res.problem("several hubs: the restarted %s took no stream in %v of load", victim.label, phase)
	}
	b.res.set("hubs_kill_notice_ms", modeTunnel, ms(notice))
	b.res.set("hubs_kill_inflight", modeTunnel, float64(inFlight))
	b.res.set("hubs_kill_failed", modeTunnel, float64(failKill))
	b.res.set("hubs_restart_connected_ms", modeTunnel, ms(reconnect))
	b.res.set("hubs_stop_failed", modeTunnel, float64(failStop))
	b.res.label("hubs_kill_failed", fmt.Sprintf("hubs: kill -9, failed conns (of %d)", okKill+failKill))
	b.res.label("hubs_stop_failed", fmt.Sprintf("hubs: stopHub, failed conns (of %d)", okStop+failStop))
	b.res.detail(modeTunnel, "hubsFailover", map[string]any{
		"setup": two.name, "hub": victimAddr, "hubProcess": victim.label, "loadClients": b.cfg.HubsLoad,
		"loadPaceMs": ms(loadPace), "phaseSeconds": phase.Seconds(),
		"killToTunnelDisconnectedMs":     ms(notice),
		"clientsInFlightAtKill":          inFlight,
		"hubOpenStreamsAtKillFromEvents": victimOpen,
		"hubStreamsOpenedBeforeKill":     victimOpened0,
		"connectionsBeforeKill":          map[string]any{"ok": okBefore, "failed": failBefore, "errors": errsBefore},
		"connectionsKillToRestart": map[string]any{"ok": okKill, "failed": failKill, "errors": errsKill,
			"failedStartedBeforeKill": failedStartedBeforeKill, "failedStartedKillToTunnelDisconnected": failedStartedBeforeNotice},
		"connectionsRestartToStopHub":       map[string]any{"ok": okRestart, "failed": failRestart, "errors": errsRestart},
		"connectionsStopHubToEnd":           map[string]any{"ok": okStop, "failed": failStop, "errors": errsStop},
		"killToRestartMs":                   ms(restartAt.Sub(killAt)),
		"restartProcessToListeningMs":       ms(listeningAt.Sub(restartAt)),
		"startHubAnswerToTunnelConnectedMs": ms(reconnect),
		"killToTunnelConnectedMs":           ms(connectedAt.Sub(killAt)),
		"restartedHubStreamsInPhase":        restartedStreams,
		"stopHubAnswerMs":                   ms(stopAnswer),
		"stopHubToTunnelDisconnectedMs":     stopNotice,
		"stopHubPhaseMs":                    ms(stopEnd.Sub(stopAt)),
		"startHubAgainToTunnelConnectedMs":  againMs,
		"reconnectNote":                     "the restart's reconnect waits for the edge's next attempt: its backoff starts at 1 s and doubles per failed attempt, jittered to half-to-full; the kill-to-restart time sets how far it has grown",
	})
	return errors.Join(two.settle(20 * time.Second))
}

// sleepCtx sleeps d or until ctx ends, and returns ctx.Err().
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return ctx.Err()
}

package systest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// soakDuration is SOAK_DURATION, else 3 minutes with CI=true, else 30 s.
func soakDuration(t testing.TB) time.Duration {
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 10*time.Second {
			t.Fatalf("SOAK_DURATION=%q: want a Go duration of at least 10s", s)
		}
		return d
	}
	if inCI() {
		return 3 * time.Minute
	}
	return 30 * time.Second
}

// faultWindow is a time during which operations may fail: from just before
// a fault until a second after the tunnel is back.
type faultWindow struct {
	kind       string // "kill" or "restart"
	start, end time.Time
}

func overlaps(ws []faultWindow, a, b time.Time, kind string) bool {
	for _, w := range ws {
		if (kind == "" || w.kind == kind) && !b.Before(w.start) && !a.After(w.end) {
			return true
		}
	}
	return false
}

func randomSpec(rng *rand.Rand) (string, opSpec) {
	switch n := rng.IntN(100); {
	case n < 40:
		return "short", opSpec{Kind: opX, Up: rng.Int64N(512), Down: 1 + rng.Int64N(4096)}
	case n < 55:
		return "bulk", opSpec{Kind: opX, Up: rng.Int64N(4 << 20), Down: rng.Int64N(8 << 20)}
	case n < 67:
		return "half-close", opSpec{Kind: opH, Up: 1 + rng.Int64N(256<<10), Down: 1 + rng.Int64N(512<<10)}
	case n < 77:
		return "client-reset", opSpec{Kind: opR, Up: 1 << 20, Prefix: rng.Int64N(64 << 10)}
	case n < 87:
		return "target-reset", opSpec{Kind: opT, Down: rng.Int64N(256 << 10)}
	default:
		return "slow-reader", opSpec{Kind: opX, Up: rng.Int64N(4096), Down: 256<<10 + rng.Int64N(768<<10), SlowRead: true}
	}
}

type soakOp struct {
	class string
	res   opResult
}

// TestSoak: mixed traffic (short requests, bulk transfers both ways,
// half-closes both ways, resets from either side, slow readers) from 16
// clients for SOAK_DURATION, with the hub killed (kill -9, new process) at
// one third and restarted (stopHub/startHub) at two thirds. Afterwards:
// every transfer confirmed end to end arrived intact, no byte was ever
// corrupted, no stream was truncated into a clean EOF, failures happened
// only around the faults, both processes are back to their idle fds and
// goroutines with no active streams, and RSS did not grow beyond a bound.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	port := testutil.FreePort(t, loopbacks...)
	target := newOpTarget(t, mustListen(t, "", hostPort("127.0.0.2", port)))
	r := newRig(t, "", testutil.FreePort(t, "::"), "127.0.0.2", "edge-soak")
	edge := r.startEdge(t, "edge", "edge-soak", "", "127.0.0.1", map[string]any{"listenHost": "127.0.0.1", "listenPorts": []int{port}})
	dial := loopbackDial(hostPort("127.0.0.1", port))
	mustOp(t, dial, target, opSpec{Kind: opX, Up: 1 << 20, Down: 1 << 20})
	hubIdle, edgeIdle := r.Hub.settledFDs(t), edge.settledFDs(t)
	hubG, edgeG := r.Hub.goroutines(t, true), edge.goroutines(t, false)
	t.Logf("soak for %v; idle fds: hub %d, edge %d; goroutines: hub %d, edge %d", dur, hubIdle, edgeIdle, hubG, edgeG)

	start := time.Now()
	stop := start.Add(dur)
	var (
		mu  sync.Mutex
		ops []soakOp
		wg  sync.WaitGroup
	)
	const workers = 16
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 0x50a4))
			for time.Now().Before(stop) {
				class, spec := randomSpec(rng)
				res := runOp(dial, target, spec, 60*time.Second)
				mu.Lock()
				ops = append(ops, soakOp{class, res})
				mu.Unlock()
				if res.Err != nil && res.Refused {
					time.Sleep(20 * time.Millisecond) // the tunnel is down: don't spin
				}
			}
		}(uint64(w) + uint64(start.UnixNano()))
	}

	var windows []faultWindow
	var rssNotes []string
	sampleRSS := func(label string, e *Engine) int64 {
		v := e.RSS(t)
		rssNotes = append(rssNotes, fmt.Sprintf("%s %s", label, mib(v)))
		return v
	}
	sleepUntil := func(frac float64) { time.Sleep(time.Until(start.Add(time.Duration(frac * float64(dur))))) }
	waitTunnel := func(from int, what string) time.Time {
		ev, _, err := edge.WaitEvent("tunnelConnected", from, 60*time.Second, nil)
		if err != nil {
			t.Fatalf("after %s: %v", what, err)
		}
		return ev.At
	}

	sleepUntil(0.25)
	edgeWarm := sampleRSS("edge@25%", edge)

	sleepUntil(1.0 / 3)
	em := edge.Mark()
	w := faultWindow{kind: "kill", start: time.Now()}
	r.Hub.Kill()
	time.Sleep(time.Second)
	restartAt := time.Now()
	r.restartHubProcess(t)
	up := waitTunnel(em, "the hub was killed")
	w.end = up.Add(time.Second)
	windows = append(windows, w)
	t.Logf("fault 1 at %v: hub killed (kill -9), new process after 1 s; tunnel back %v after the restart",
		w.start.Sub(start).Round(time.Second), up.Sub(restartAt).Round(time.Millisecond))

	sleepUntil(0.5)
	hubWarm := sampleRSS("hub@50%", r.Hub)

	sleepUntil(2.0 / 3)
	em = edge.Mark()
	w = faultWindow{kind: "restart", start: time.Now()}
	r.Hub.MustCall(t, "stopHub", nil, nil)
	restartAt = time.Now()
	r.startHubAgain(t)
	up = waitTunnel(em, "stopHub/startHub")
	w.end = up.Add(time.Second)
	windows = append(windows, w)
	t.Logf("fault 2 at %v: stopHub, startHub in the same process; tunnel back %v after startHub",
		w.start.Sub(start).Round(time.Second), up.Sub(restartAt).Round(time.Millisecond))

	sleepUntil(0.95)
	edgeLate, hubLate := sampleRSS("edge@95%", edge), sampleRSS("hub@95%", r.Hub)
	wg.Wait()
	t.Logf("traffic stopped after %v", time.Since(start).Round(time.Second))

	// Let every target handler finish, then check both sides.
	if !testutil.Poll(30*time.Second, func() bool { return target.srv.open() == 0 }) {
		t.Errorf("%d target connections are still open 30 s after the traffic stopped", target.srv.open())
	}
	_, hubFDs := r.Hub.WaitIdle(t, true, hubIdle, 30*time.Second)
	_, edgeFDs := edge.WaitIdle(t, false, edgeIdle, 30*time.Second)
	// The hub is a new process by now, restarted in place once more, with the
	// same configuration: it must be back to the first one's idle count.
	hubGAfter := r.Hub.WaitGoroutines(t, true, hubG, 15*time.Second)
	edgeGAfter := edge.WaitGoroutines(t, false, edgeG, 15*time.Second)

	// --- The verdict.
	var problems []string
	problem := func(format string, args ...any) {
		if len(problems) < 30 {
			problems = append(problems, fmt.Sprintf(format, args...))
		} else if len(problems) == 30 {
			problems = append(problems, "...")
		}
	}
	type stat struct{ n, acked, failedInWindow int }
	stats := map[string]*stat{}
	var ackedBytes, verifiedDown int64
	byID := map[uint64]soakOp{}
	for _, op := range ops {
		res := op.res
		byID[res.ID] = op
		st := stats[op.class]
		if st == nil {
			st = &stat{}
			stats[op.class] = st
		}
		st.n++
		verifiedDown += res.DownOK
		if res.Acked {
			st.acked++
			ackedBytes += res.UpAcked + res.DownOK
		}
		switch {
		case res.Corrupt:
			problem("%s op %d: %v", op.class, res.ID, res.Err)
		case res.Truncated:
			problem("%s op %d at %v: a truncated stream ended in a clean EOF: %v", op.class, res.ID, res.Start.Sub(start).Round(time.Millisecond), res.Err)
		case res.Err != nil && overlaps(windows, res.Start, res.End, ""):
			st.failedInWindow++
		case res.Err != nil:
			problem("%s op %d (%v..%v) failed outside any fault window: %v", op.class, res.ID,
				res.Start.Sub(start).Round(time.Millisecond), res.End.Sub(start).Round(time.Millisecond), res.Err)
		}
	}
	for _, rec := range target.all() {
		op, known := byID[rec.ID]
		when := rec.Start.Sub(start).Round(time.Millisecond)
		if !known {
			continue // the warm-up
		}
		if rec.Mismatch {
			problem("op %d (%s) at %v: the target received a corrupted upload (%d of %d bytes)", rec.ID, op.class, when, rec.Received, rec.Up)
		}
		if op.res.LocalAddr != "" && canonicalAddr(rec.Proxy.Src()) != canonicalAddr(op.res.LocalAddr) {
			problem("op %d: PROXY header %q, client socket %s", rec.ID, rec.Proxy.Line, op.res.LocalAddr)
		}
		inKill := overlaps(windows, rec.Start, rec.End, "kill")
		switch rec.Kind {
		case opX, opH:
			if rec.CleanEOF && !rec.Verified && !inKill {
				problem("op %d (%s) at %v: the upload reached the target truncated, with a clean EOF (%d of %d bytes)", rec.ID, op.class, when, rec.Received, rec.Up)
			}
			if op.res.Acked && !rec.Verified {
				problem("op %d (%s): acknowledged, but the target did not verify its upload", rec.ID, op.class)
			}
		case opR:
			if rec.CleanEOF && !inKill {
				problem("op %d (client-reset) at %v: the client's reset reached the target as a clean EOF after %d bytes", rec.ID, when, rec.Received)
			}
		}
	}
	target.mu.Lock()
	for _, h := range target.headerl {
		problem("target: %s", h)
	}
	for _, tl := range target.truncLines {
		if !overlaps(windows, tl.at, tl.at, "kill") {
			problem("target at %v: an op line cut short by a clean EOF: %q", tl.at.Sub(start).Round(time.Millisecond), tl.line)
		}
	}
	target.mu.Unlock()
	for _, e := range target.srv.proxyErrors() {
		problem("target: %s", e)
	}

	// Stream events of the last hub process balance.
	opened, closed := 0, 0
	for _, ev := range r.Hub.Events(0) {
		switch ev.Name {
		case "streamOpened":
			opened++
		case "streamClosed":
			closed++
		}
	}
	hst, est := r.Hub.HubStatus(t), edge.EdgeStatus(t)
	if hst.EventsDropped == 0 && opened != closed {
		problem("the hub process reported %d streamOpened and %d streamClosed", opened, closed)
	}

	// --- The figures.
	classes := make([]string, 0, len(stats))
	total, acked := 0, 0
	for c, st := range stats {
		classes = append(classes, c)
		total += st.n
		acked += st.acked
	}
	sort.Strings(classes)
	var b strings.Builder
	for _, c := range classes {
		st := stats[c]
		fmt.Fprintf(&b, "\n  %-13s %6d ops, %6d confirmed end to end, %4d failed inside a fault window", c, st.n, st.acked, st.failedInWindow)
	}
	t.Logf("soak: %d operations in %v (%d confirmed end to end); %s of confirmed transfers verified byte by byte (sha256 both ways); %s downloaded and checked in all%s",
		total, dur, acked, mib(ackedBytes), mib(verifiedDown), b.String())
	t.Logf("faults: hub kill -9 + new process, hub stopHub/startHub; events dropped: hub %d, edge %d; streams opened/closed by the last hub process: %d/%d",
		hst.EventsDropped, est.EventsDropped, opened, closed)
	t.Logf("fds after the soak: hub %d (idle before %d), edge %d (idle before %d); goroutines: hub %d (idle before %d), edge %d (idle before %d); RSS: %s",
		hubFDs, hubIdle, edgeFDs, edgeIdle, hubGAfter, hubG, edgeGAfter, edgeG, strings.Join(rssNotes, ", "))
	if hubGAfter > hubG || edgeGAfter > edgeG {
		problem("goroutines not back to idle: hub %d -> %d, edge %d -> %d", hubG, hubGAfter, edgeG, edgeGAfter)
	}

	for _, pair := range []struct {
		who        string
		warm, late int64
	}{{"edge", edgeWarm, edgeLate}, {"hub", hubWarm, hubLate}} {
		bound := max(pair.warm*3/2, pair.warm+32<<20)
		if pair.late > bound {
			problem("%s RSS grew from %s after warm-up to %s near the end (bound %s)", pair.who, mib(pair.warm), mib(pair.late), mib(bound))
		}
	}
	if acked == 0 || stats["bulk"] == nil || stats["bulk"].acked == 0 {
		problem("no bulk transfer was confirmed end to end")
	}
	if len(problems) > 0 {
		t.Errorf("soak found %d problems:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
}

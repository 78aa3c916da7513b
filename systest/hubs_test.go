package systest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// Several hubs (CONTRACT section 12, README "Several hubs"): one edge
// process with startEdge.hubs [A, B], two hub processes, real faults (kill
// -9, SIGSTOP, SIGTERM, stopHub). Hub A dials its targets on 127.0.0.2 and
// hub B on 127.0.0.3, each address served by its own op target, so every
// client connection is known to have gone through A or through B.

const (
	hubATarget = "127.0.0.2"
	hubBTarget = "127.0.0.3"
)

// hubProc is one hub of a pair, a --management process, restartable on
// the same tunnel port.
type hubProc struct {
	name   string
	params map[string]any
	edges  [][2]string
	eng    *Engine
	addr   string // 127.0.0.1:port, as the edge lists it
}

func startHubProc(t testing.TB, name, targetHost string, edges [][2]string) *hubProc {
	t.Helper()
	h := &hubProc{name: name, edges: edges, params: map[string]any{"tunnelPort": 0, "targetHost": targetHost}}
	h.eng = startEngine(t, name, "")
	port := h.eng.StartHub(t, h.params, edges...)
	h.params["tunnelPort"] = port
	h.addr = hostPort("127.0.0.1", port)
	return h
}

// restart starts a new process for a hub whose process is gone, on the
// same port (retrying for up to 10 s while the port is still taken).
func (h *hubProc) restart(t testing.TB) {
	t.Helper()
	h.eng = startEngine(t, h.name, "")
	h.eng.MustCall(t, "updateAllowedEdges", map[string]any{"edges": edgeObjects(h.edges)}, nil)
	h.startAgain(t)
}

// startAgain calls startHub again in the current process.
func (h *hubProc) startAgain(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := h.eng.Call("startHub", h.params)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarting %s on %s: %v", h.name, h.addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hubsSetup is the targets and the edge of a two-hub test.
type hubsSetup struct {
	port   int // the edge's listen port, the targets' port
	ta, tb *opTarget
	edge   *Engine
	dial   func() (net.Conn, error)
	edgeID string
	secret string
	// transport is the edge's ("": its default, TLS).
	transport string
}

// newHubsSetup starts the two targets and picks the ports and the edge's
// credentials; startEdge starts the edge once the hubs are there.
func newHubsSetup(t testing.TB, edgeID string) *hubsSetup {
	t.Helper()
	s := &hubsSetup{edgeID: edgeID, secret: randomSecret()}
	s.port = testutil.FreePort(t, "127.0.0.1", hubATarget, hubBTarget)
	s.ta = newOpTarget(t, mustListen(t, "", hostPort(hubATarget, s.port)))
	s.tb = newOpTarget(t, mustListen(t, "", hostPort(hubBTarget, s.port)))
	s.dial = loopbackDial(hostPort("127.0.0.1", s.port))
	return s
}

func (s *hubsSetup) edges() [][2]string { return [][2]string{{s.edgeID, s.secret}} }

// startEdge starts the edge process with hubs and mode and waits for a
// tunnelConnected of each hub in waitFor.
func (s *hubsSetup) startEdge(t testing.TB, hubs []string, mode string, waitFor ...string) {
	t.Helper()
	s.edge = startEngine(t, "edge", "")
	p := map[string]any{"hubs": hubs, "hubMode": mode, "edgeId": s.edgeID, "secret": s.secret,
		"listenHost": "127.0.0.1", "listenPorts": []int{s.port}}
	if s.transport != "" {
		p["transport"] = s.transport
	}
	s.edge.StartEdge(t, p)
	for _, h := range waitFor {
		waitHubEvent(t, s.edge, "tunnelConnected", h, 0, 15*time.Second)
	}
}

// via says which hub carried op id: "A", "B", or "" (no target saw it).
func (s *hubsSetup) via(id uint64) string {
	switch {
	case s.ta.record(id) != nil:
		return "A"
	case s.tb.record(id) != nil:
		return "B"
	}
	return ""
}

// firstOpAfter waits until target ot has an operation that started after
// at (the edge sends it new clients again).
func firstOpAfter(ot *opTarget, at time.Time, timeout time.Duration) (time.Time, bool) {
	var first time.Time
	ok := testutil.Poll(timeout, func() bool {
		for _, r := range ot.all() {
			if r.Start.After(at) && (first.IsZero() || r.Start.Before(first)) {
				first = r.Start
			}
		}
		return !first.IsZero()
	})
	return first, ok
}

// waitHubEvent waits for the edge event name carrying hub (the address).
func waitHubEvent(t testing.TB, e *Engine, name, hub string, from int, timeout time.Duration) Event {
	t.Helper()
	ev, _, err := e.WaitEvent(name, from, timeout, func(ev Event) bool { return eventString(ev, "hub") == hub })
	if err != nil {
		t.Fatalf("%v (hub %s)", err, hub)
	}
	return ev
}

// edgeHub is one entry of the edge status' hubs.
type edgeHub struct {
	Address       string  `json:"address"`
	Connected     bool    `json:"connected"`
	ActiveStreams int     `json:"activeStreams"`
	Transport     *string `json:"transport"`
	Draining      bool    `json:"draining"`
}

func (h edgeHub) String() string {
	tr := "null"
	if h.Transport != nil {
		tr = *h.Transport
	}
	return fmt.Sprintf("{connected %v, activeStreams %d, transport %s, draining %v}", h.Connected, h.ActiveStreams, tr, h.Draining)
}

func edgeHubs(t testing.TB, e *Engine) map[string]edgeHub {
	t.Helper()
	var st struct {
		Connected bool      `json:"connected"`
		Hubs      []edgeHub `json:"hubs"`
	}
	e.MustCall(t, "getEdgeStatus", nil, &st)
	out := map[string]edgeHub{}
	for _, h := range st.Hubs {
		out[h.Address] = h
	}
	return out
}

// ---------------------------------------------------------------------------
// A steady client load: workers each making one round trip every period
// (back to back when period is 0).

// smallOp is 200 bytes up and 2000 down, verified, then the target's "OK".
var smallOp = opSpec{Kind: opX, Up: 200, Down: 2000}

// smallOps runs smallOp.
func smallOps(dial func() (net.Conn, error), ot *opTarget, timeout time.Duration) func() opResult {
	return func() opResult { return runOp(dial, ot, smallOp, timeout) }
}

// slowUploads is an op X whose 60 KiB upload is written in 2 KiB pieces
// 20 ms apart (about 0.6 s), so that its stream stays open at the hub all
// that time (a slow upload would not: the edge buffers it). It succeeds
// when the 2000 download bytes are intact and the target says "OK".
func slowUploads(dial func() (net.Conn, error), timeout time.Duration) func() opResult {
	return func() (res opResult) {
		const up, piece, down = 60 << 10, 2 << 10, 2000
		id := opIDs.Add(1)
		seed := rand.Uint64() >> 1
		res = opResult{ID: id, Spec: opSpec{Kind: opX, Up: up, Down: down}, Start: time.Now()}
		defer func() { res.End = time.Now() }()
		conn, err := dial()
		if err != nil {
			res.Err = fmt.Errorf("dial: %w", err)
			return res
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(conn, "%c %d %d %d %d\n", opX, id, up, down, seed); err != nil {
			res.Err = fmt.Errorf("writing the op line: %w", err)
			return res
		}
		g := genStream(seed)
		buf := make([]byte, piece)
		for sent := 0; sent < up; sent += piece {
			_, _ = g.Read(buf)
			if _, err := conn.Write(buf); err != nil {
				res.Err = fmt.Errorf("upload after %d bytes: %w", sent, err)
				return res
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			res.Err = err
			return res
		}
		v := newVerifier(seed + 1)
		n, err := readVerify(conn, v, down, false)
		if err != nil || v.Bad {
			res.Err = fmt.Errorf("download: %d of %d bytes (corrupt %v): %v", n, down, v.Bad, err)
			return res
		}
		rest, err := io.ReadAll(io.LimitReader(conn, 64))
		if err != nil || string(rest) != "OK\n" {
			res.Err = fmt.Errorf("target verdict %q, %v", rest, err)
			return res
		}
		res.Acked = true
		return res
	}
}

type clientLoad struct {
	mu   sync.Mutex
	ops  []opResult
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func startLoad(t testing.TB, workers int, period time.Duration, op func() opResult) *clientLoad {
	l := &clientLoad{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			next := time.Now().Add(time.Duration(w) * period / time.Duration(workers))
			for {
				select {
				case <-l.stop:
					return
				case <-time.After(time.Until(next)):
				}
				res := op()
				l.mu.Lock()
				l.ops = append(l.ops, res)
				l.mu.Unlock()
				next = next.Add(period)
				if now := time.Now(); next.Before(now) {
					next = now
				}
			}
		}()
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// Stop ends the load and returns every operation, in no particular order.
func (l *clientLoad) Stop() []opResult {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]opResult(nil), l.ops...)
}

// loadReport is the operations of a load sorted by what happened to them
// around a fault at faultAt that the edge noticed at detectAt.
type loadReport struct {
	total, failed            int
	viaA, viaB               int // succeeded through each hub
	inFlight                 int // started before faultAt, ended after it
	inWindow, inWindowOK     int // started in [faultAt, detectAt]
	after, afterOK           int // started after detectAt
	failures                 []string
	failedAfter, failedEarly []string // failed although started after detectAt, or ended before faultAt
	failedOnB                []string // failed while the B target had it
	rate                     float64  // operations per second
}

func analyzeLoad(s *hubsSetup, ops []opResult, faultAt, detectAt time.Time) loadReport {
	var r loadReport
	var first, last time.Time
	for _, op := range ops {
		r.total++
		if first.IsZero() || op.Start.Before(first) {
			first = op.Start
		}
		if op.End.After(last) {
			last = op.End
		}
		via := s.via(op.ID)
		started := op.Start.Sub(faultAt).Round(10 * time.Microsecond)
		took := op.End.Sub(op.Start).Round(time.Millisecond)
		switch {
		case op.Start.Before(faultAt) && op.End.After(faultAt):
			r.inFlight++
		case !op.Start.Before(faultAt) && !op.Start.After(detectAt):
			r.inWindow++
			if op.Acked {
				r.inWindowOK++
			}
		case op.Start.After(detectAt):
			r.after++
			if op.Acked {
				r.afterOK++
			}
		}
		if op.Acked {
			switch via {
			case "A":
				r.viaA++
			case "B":
				r.viaB++
			}
			continue
		}
		r.failed++
		desc := fmt.Sprintf("op %d started %v after the fault, took %v, target %q: %v", op.ID, started, took, via, op.Err)
		r.failures = append(r.failures, desc)
		if op.Start.After(detectAt) {
			r.failedAfter = append(r.failedAfter, desc)
		}
		if op.End.Before(faultAt) {
			r.failedEarly = append(r.failedEarly, desc)
		}
		if via == "B" {
			r.failedOnB = append(r.failedOnB, desc)
		}
	}
	if d := last.Sub(first).Seconds(); d > 0 {
		r.rate = float64(r.total) / d
	}
	return r
}

// summary is the counts without the fault's windows.
func (r loadReport) summary() string {
	return fmt.Sprintf("%d round trips (%.0f/s): %d through A, %d through B, %d failed", r.total, r.rate, r.viaA, r.viaB, r.failed)
}

func (r loadReport) String() string {
	return fmt.Sprintf("%d round trips (%.0f/s): %d through A, %d through B, %d failed; %d in flight at the fault, "+
		"%d started before the edge noticed (%d ok), %d after (%d ok)",
		r.total, r.rate, r.viaA, r.viaB, r.failed, r.inFlight, r.inWindow, r.inWindowOK, r.after, r.afterOK)
}

// checkBounded fails the test unless every failure is one the fault can
// explain: the operation was open when the fault struck or started before
// the edge noticed, and it was not on B.
func (r loadReport) checkBounded(t testing.TB) {
	t.Helper()
	for _, f := range r.failures[:min(len(r.failures), 20)] {
		t.Logf("  failed: %s", f)
	}
	if len(r.failedAfter) > 0 {
		t.Errorf("%d round trips that started after the edge reported hub A down failed, e.g. %s", len(r.failedAfter), r.failedAfter[0])
	}
	if len(r.failedEarly) > 0 {
		t.Errorf("%d round trips that ended before the fault failed, e.g. %s", len(r.failedEarly), r.failedEarly[0])
	}
	if len(r.failedOnB) > 0 {
		t.Errorf("%d round trips failed through hub B, which stayed up, e.g. %s", len(r.failedOnB), r.failedOnB[0])
	}
	if r.failed > r.inFlight+r.inWindow {
		t.Errorf("%d failures, more than the %d open at the fault plus the %d started before the edge noticed", r.failed, r.inFlight, r.inWindow)
	}
	if r.afterOK < 50 {
		t.Errorf("only %d round trips succeeded after the edge noticed: too few to show the clients go to B", r.afterOK)
	}
}

// hold opens a stream that stays open (op W) and returns it with the hub
// that carries it, once a target has it.
func (s *hubsSetup) hold(t testing.TB) (net.Conn, string) {
	t.Helper()
	c, err := s.dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	id := opIDs.Add(1)
	if _, err := fmt.Fprintf(c, "%c %d 0 0 0\n", opW, id); err != nil {
		t.Fatal(err)
	}
	if !testutil.Poll(10*time.Second, func() bool { return s.via(id) != "" }) {
		t.Fatalf("no target saw held connection %d", id)
	}
	return c, s.via(id)
}

// holdOnBoth opens held streams until two are on each hub.
func holdOnBoth(t testing.TB, s *hubsSetup) (onA, onB []net.Conn) {
	t.Helper()
	for i := 0; i < 20 && (len(onA) < 2 || len(onB) < 2); i++ {
		c, via := s.hold(t)
		if via == "A" {
			onA = append(onA, c)
		} else {
			onB = append(onB, c)
		}
	}
	if len(onA) < 2 || len(onB) < 2 {
		t.Fatalf("held streams: %d on A, %d on B; the edge does not spread them", len(onA), len(onB))
	}
	return onA, onB
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ---------------------------------------------------------------------------

// TestHubsKillOneUnderLoad: spread mode, hub A is killed (kill -9) under a
// steady load of ~200 round trips per second from 4 clients. Proves: the
// streams open on A are reset and those on B stay open (a hub takes only
// its own streams); the edge reports tunnelDisconnected for A; every
// client that arrives after that event goes through B and succeeds, and
// every failure is explained by the kill: it was open when A died or
// started before the edge noticed, and it was not on B (so failures ≤ in
// flight at the kill + started within the detection window). That is
// what can be proved from outside: a client's start time is taken before
// it dials and after the event line was read, so the edge accepted it
// after it had marked A down (it does that before it emits the event). A
// new process of A on the same port gets new clients again. Measured
// (logged): the detection time (kill → tunnelDisconnected; on loopback
// the kernel resets the dead process's sockets at once), the failures,
// the clients in flight and in the window, the reconnect time. On both
// transports: over QUIC the edge's connected UDP socket gets the kernel's
// port unreachable at its first packet to the dead hub.
func TestHubsKillOneUnderLoad(t *testing.T) {
	for _, tr := range []string{"tls", "quic"} {
		t.Run(tr, func(t *testing.T) {
			s := newHubsSetup(t, "edge-hk")
			s.transport = tr
			a := startHubProc(t, "hub-a", hubATarget, s.edges())
			b := startHubProc(t, "hub-b", hubBTarget, s.edges())
			s.startEdge(t, []string{a.addr, b.addr}, "spread", a.addr, b.addr)
			waitOp(t, s.dial, s.ta, 10*time.Second)
			onA, onB := holdOnBoth(t, s)

			load := startLoad(t, 4, 20*time.Millisecond, smallOps(s.dial, s.ta, 10*time.Second))
			time.Sleep(1500 * time.Millisecond)
			em := s.edge.Mark()
			killAt := time.Now()
			a.eng.Kill()
			ev := waitHubEvent(t, s.edge, "tunnelDisconnected", a.addr, em, 10*time.Second)
			t.Logf("hub A killed (kill -9); the edge reported tunnelDisconnected for it %v later: %s",
				ev.At.Sub(killAt).Round(time.Microsecond), ev.Data)

			for i, c := range onA {
				at, err := waitClosed(c, 5*time.Second)
				t.Logf("held stream %d on A: closed %v after the kill: %v", i, at.Sub(killAt).Round(time.Millisecond), err)
				if !isReset(err) {
					t.Errorf("held stream %d on A: want a reset, got %v", i, err)
				}
			}
			for i, c := range onB {
				if _, err := waitClosed(c, 300*time.Millisecond); !isTimeout(err) {
					t.Errorf("held stream %d on B ended when A was killed: %v", i, err)
				}
			}
			if st := edgeHubs(t, s.edge); st[a.addr].Connected || !st[b.addr].Connected {
				t.Errorf("edge status after the kill: %+v", st)
			}

			time.Sleep(1500 * time.Millisecond) // B alone for a while
			em = s.edge.Mark()
			restartAt := time.Now()
			a.restart(t)
			up := waitHubEvent(t, s.edge, "tunnelConnected", a.addr, em, 30*time.Second)
			first, ok := firstOpAfter(s.ta, up.At, 10*time.Second)
			if !ok {
				t.Errorf("the restarted hub A got no new client within 10 s of its tunnel")
			}
			t.Logf("hub A restarted on the same port: its tunnel back %v after the restart (%v after the kill), its first new client %v after that",
				up.At.Sub(restartAt).Round(time.Millisecond), up.At.Sub(killAt).Round(time.Millisecond), first.Sub(up.At).Round(time.Millisecond))
			time.Sleep(500 * time.Millisecond)
			rep := analyzeLoad(s, load.Stop(), killAt, ev.At)
			t.Logf("load: %s", rep)
			rep.checkBounded(t)
			if rep.viaA == 0 || rep.viaB == 0 {
				t.Errorf("the load did not use both hubs: %d through A, %d through B", rep.viaA, rep.viaB)
			}
		})
	}
}

// TestHubsBlackHoledHub: spread mode, hub A's process is stopped (SIGSTOP:
// a hung host; its kernel still accepts and ACKs, nothing answers) under
// ~200 round trips per second from 10 clients (each client hung on A
// stops its own round trips, so the rate drops a little). The edge can
// only notice by
// its keepalive (30 s without a frame; not a startEdge param), so this
// takes ~30 s and is skipped under -short. Proves: the edge reports
// tunnelDisconnected for A within the keepalive bound (asserted 25-40 s);
// the clients it gave A meanwhile hang and are reset when it gives A up
// (each accounted for: open at the stop or started before the event,
// ended no earlier than 1 s before it, none through B); A's hung streams
// count as its active streams, so "fewest streams" sends nearly every
// other client to B during the window (asserted: at least 90% of the
// window's clients succeeded); every client after the event succeeds;
// once A runs again (SIGCONT) the edge reconnects and A gets clients
// again. Measured (logged): the detection time, the hung clients, the
// window's successes.
func TestHubsBlackHoledHub(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: detecting a hung hub takes the 30 s keepalive")
	}
	s := newHubsSetup(t, "edge-hs")
	a := startHubProc(t, "hub-a", hubATarget, s.edges())
	b := startHubProc(t, "hub-b", hubBTarget, s.edges())
	s.startEdge(t, []string{a.addr, b.addr}, "spread", a.addr, b.addr)
	waitOp(t, s.dial, s.ta, 10*time.Second)

	load := startLoad(t, 10, 50*time.Millisecond, smallOps(s.dial, s.ta, 45*time.Second))
	time.Sleep(1500 * time.Millisecond)
	pid := a.eng.Pid()
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // runs before its process is killed
	em := s.edge.Mark()
	stopAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ev := waitHubEvent(t, s.edge, "tunnelDisconnected", a.addr, em, 45*time.Second)
	detect := ev.At.Sub(stopAt)
	t.Logf("hub A stopped (SIGSTOP); the edge reported tunnelDisconnected for it %v later: %s", detect.Round(time.Millisecond), ev.Data)
	if detect < 25*time.Second || detect > 40*time.Second {
		t.Errorf("detection after %v; the 30 s keepalive should take 25-40 s", detect.Round(time.Millisecond))
	}
	if st := edgeHubs(t, s.edge); st[a.addr].Connected || !st[b.addr].Connected {
		t.Errorf("edge status after the keepalive timeout: %+v", st)
	}

	em = s.edge.Mark()
	contAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	up := waitHubEvent(t, s.edge, "tunnelConnected", a.addr, em, 20*time.Second)
	first, ok := firstOpAfter(s.ta, up.At, 10*time.Second)
	if !ok {
		t.Errorf("hub A, running again, got no new client within 10 s of its tunnel")
	}
	t.Logf("hub A continued (SIGCONT): its tunnel back %v later, its first new client %v after that",
		up.At.Sub(contAt).Round(time.Millisecond), first.Sub(up.At).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	rep := analyzeLoad(s, load.Stop(), stopAt, ev.At)
	t.Logf("load: %s", rep)
	rep.checkBounded(t)
	var hung []time.Duration
	for _, op := range load.Stop() {
		if op.Acked {
			continue
		}
		hung = append(hung, op.End.Sub(op.Start).Round(time.Millisecond))
		if op.End.Before(ev.At.Add(-time.Second)) {
			t.Errorf("op %d failed %v before the edge gave A up, it should have hung until then: %v", op.ID, ev.At.Sub(op.End).Round(time.Millisecond), op.Err)
		}
	}
	t.Logf("%d clients hung on A until the keepalive reset them (for %v); %d of the %d clients that arrived while A hung went through B",
		len(hung), hung, rep.inWindowOK, rep.inWindow)
	if rep.inWindowOK*10 < rep.inWindow*9 {
		t.Errorf("only %d of the %d clients that arrived while A hung succeeded: A's hung streams should keep new clients on B", rep.inWindowOK, rep.inWindow)
	}
}

// rollingHub is a hub of the rolling-restart test: stop (gracefully) and
// start again on the same port.
type rollingHub struct {
	addr   string
	target *opTarget
	stop   func(t *testing.T) // returns once the hub has stopped
	start  func(t *testing.T) // returns once the hub listens again
}

// rollingRestart runs the load, stops and restarts each hub in turn
// (waiting until the edge uses the restarted one again before the next),
// and asserts that no client failed.
func rollingRestart(t *testing.T, s *hubsSetup, hubs []rollingHub) {
	s.startEdge(t, []string{hubs[0].addr, hubs[1].addr}, "spread", hubs[0].addr, hubs[1].addr)
	waitOp(t, s.dial, s.ta, 10*time.Second)
	load := startLoad(t, 4, 20*time.Millisecond, smallOps(s.dial, s.ta, 10*time.Second))
	slow := startLoad(t, 3, 0, slowUploads(s.dial, 20*time.Second))
	time.Sleep(time.Second)
	start := time.Now()
	stops := make([]time.Time, len(hubs))
	for i, h := range hubs {
		name := string(rune('A' + i))
		em, lm := s.edge.Mark(), s.edge.LogMark()
		stopAt := time.Now()
		stops[i] = stopAt
		h.stop(t)
		stopped := time.Since(stopAt)
		down := waitHubEvent(t, s.edge, "tunnelDisconnected", h.addr, em, 10*time.Second)
		drained := "no DRAIN seen"
		if l, err := s.edge.WaitLog(lm, time.Second, "new clients go to the other hubs", h.addr); err == nil {
			drained = fmt.Sprintf("DRAIN seen %v after the stop began", l.At.Sub(stopAt).Round(time.Millisecond))
		} else {
			t.Errorf("hub %s: the edge never logged its DRAIN: %v", name, err)
		}
		time.Sleep(500 * time.Millisecond) // the other hub alone for a while
		startAt := time.Now()
		h.start(t)
		up := waitHubEvent(t, s.edge, "tunnelConnected", h.addr, em, 30*time.Second)
		first, ok := firstOpAfter(h.target, up.At, 10*time.Second)
		if !ok {
			t.Fatalf("hub %s, restarted, got no new client within 10 s of its tunnel", name)
		}
		t.Logf("hub %s: stopped in %v (%s; tunnelDisconnected %v after the stop began); restarted, tunnel back %v later, first new client %v after that",
			name, stopped.Round(time.Millisecond), drained, down.At.Sub(stopAt).Round(time.Millisecond),
			up.At.Sub(startAt).Round(time.Millisecond), first.Sub(up.At).Round(time.Millisecond))
	}
	time.Sleep(500 * time.Millisecond)
	rep := analyzeLoad(s, load.Stop(), start, start)
	slowOps := slow.Stop()
	srep := analyzeLoad(s, slowOps, start, start)
	t.Logf("load: %s; slow uploads: %s", rep.summary(), srep.summary())
	for _, f := range append(rep.failures, srep.failures...)[:min(len(rep.failures)+len(srep.failures), 20)] {
		t.Logf("  failed: %s", f)
	}
	if n := rep.failed + srep.failed; n != 0 {
		t.Errorf("%d of %d client connections failed during the rolling restart; a hub that stops gracefully must refuse no client and cut no stream",
			n, rep.total+srep.total)
	}
	// The slow uploads open on a hub when it began to stop: they finished
	// (the hub let them), which the zero above covers; here, that there were
	// some, so that the drain had streams to wait for.
	open := 0
	for i, at := range stops {
		n, last := 0, time.Duration(0)
		for _, op := range slowOps {
			if op.Start.Before(at) && op.End.After(at) && s.via(op.ID) == string(rune('A'+i)) {
				n++
				last = max(last, op.End.Sub(at))
			}
		}
		t.Logf("hub %s: %d slow uploads were open on it when it began to stop; they finished, the last %v after the stop began",
			string(rune('A'+i)), n, last.Round(time.Millisecond))
		open += n
	}
	if open == 0 {
		t.Errorf("no slow upload was open on a hub when it stopped: the drain of open streams was not exercised")
	}
	if rep.viaA == 0 || rep.viaB == 0 {
		t.Errorf("the load did not use both hubs: %d through A, %d through B", rep.viaA, rep.viaB)
	}
}

// TestHubsRollingRestart: spread mode under ~200 round trips per second
// from 4 clients, a rolling restart of both hubs: A stops gracefully and
// starts again, the edge is connected to it and sends it clients again,
// then the same with B. Proves the contract's key claim for several hubs:
// zero failed client connections (asserted), because a stopping hub sends
// DRAIN first (asserted: the edge logs it for each hub) and serves what
// was already on its way. Two ways to stop: stopHub then startHub in the
// --management process, and SIGTERM of a standalone `remoteingress-bin
// hub --config` (gracePeriodSecs 3) followed by a new process on the same
// port. Measured (logged): round trips per hub, each stop's duration and
// how soon the edge had the hub back.
func TestHubsRollingRestart(t *testing.T) {
	t.Run("stopHub", func(t *testing.T) {
		s := newHubsSetup(t, "edge-rm")
		var hubs []rollingHub
		for i, target := range []string{hubATarget, hubBTarget} {
			h := startHubProc(t, "hub-"+string(rune('a'+i)), target, s.edges())
			hubs = append(hubs, rollingHub{addr: h.addr, target: []*opTarget{s.ta, s.tb}[i],
				stop:  func(t *testing.T) { h.eng.MustCall(t, "stopHub", nil, nil) },
				start: func(t *testing.T) { h.startAgain(t) }})
		}
		rollingRestart(t, s, hubs)
	})
	t.Run("SIGTERM", func(t *testing.T) {
		s := newHubsSetup(t, "edge-rs")
		dir := t.TempDir()
		secretFile := filepath.Join(dir, "edge.secret")
		if err := os.WriteFile(secretFile, []byte(s.secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var hubs []rollingHub
		for i, target := range []string{hubATarget, hubBTarget} {
			h := &standaloneHub{name: "hub-" + string(rune('a'+i)), port: testutil.FreePort(t, "127.0.0.1")}
			h.config = filepath.Join(dir, h.name+".yaml")
			cfg := fmt.Sprintf("tunnelPort: %d\nlistenHost: 127.0.0.1\ntargetHost: %s\nallowedEdges:\n  - id: %s\n    secretFile: %s\ngracePeriodSecs: 3\n",
				h.port, target, s.edgeID, secretFile)
			if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			h.start(t)
			hubs = append(hubs, rollingHub{addr: hostPort("127.0.0.1", h.port), target: []*opTarget{s.ta, s.tb}[i],
				stop: h.sigterm, start: h.start})
		}
		rollingRestart(t, s, hubs)
	})
}

// standaloneHub is `remoteingress-bin hub --config` as a daemon.
type standaloneHub struct {
	name, config string
	port         int
	d            *daemon
}

// start runs a new process and waits for "hub ready" (retrying for up to
// 10 s while the port is still taken).
func (h *standaloneHub) start(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.d = startDaemon(t, h.name, exec.Command(binPath, "hub", "--config", h.config))
		exited := false
		if testutil.Poll(10*time.Second, func() bool {
			select {
			case <-h.d.exited:
				exited = true
				return true
			default:
			}
			return strings.Contains(h.d.out.String(), "hub ready")
		}) && !exited {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start (exited %v):\n%s", h.name, exited, tail(h.d.out.String(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sigterm sends SIGTERM and waits for a clean exit.
func (h *standaloneHub) sigterm(t *testing.T) {
	t.Helper()
	if err := h.d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still runs 10 s after SIGTERM", h.name)
	}
	if code := h.d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited with %d after SIGTERM, want 0", h.name, code)
	}
}

// TestHubsFailover: hubMode "failover" with hubs [A, B]. Proves, through
// the per-hub status, each hub's own status and which target each client
// reached: while A is up only A is used (B has no tunnel from the edge);
// when A is killed the edge moves to B; when A is back it stays on B (it
// does not leave a working hub); when B is killed it returns to A.
// Measured (logged): each failover time (kill → tunnelConnected of the
// other hub).
func TestHubsFailover(t *testing.T) {
	s := newHubsSetup(t, "edge-hf")
	a := startHubProc(t, "hub-a", hubATarget, s.edges())
	b := startHubProc(t, "hub-b", hubBTarget, s.edges())
	s.startEdge(t, []string{a.addr, b.addr}, "failover", a.addr)
	hubs := map[string]*hubProc{"A": a, "B": b}
	expect := func(phase, want string) {
		t.Helper()
		other := map[string]string{"A": "B", "B": "A"}[want]
		st := edgeHubs(t, s.edge)
		if !st[hubs[want].addr].Connected || st[hubs[other].addr].Connected {
			t.Errorf("%s: edge status %+v, want only %s connected", phase, st, want)
		}
		for _, name := range []string{"A", "B"} {
			if hubs[name].eng == nil {
				continue
			}
			select {
			case <-hubs[name].eng.Exited():
				continue
			default:
			}
			n := len(hubs[name].eng.HubStatus(t).ConnectedEdges)
			if (name == want) != (n == 1) {
				t.Errorf("%s: hub %s lists %d connected edges", phase, name, n)
			}
		}
		count := map[string]int{}
		for i := 0; i < 20; i++ {
			res := runOp(s.dial, s.ta, smallOp, 10*time.Second)
			if !res.Acked {
				t.Errorf("%s: a round trip failed: %v", phase, res.Err)
				continue
			}
			count[s.via(res.ID)]++
		}
		t.Logf("%s: 20 round trips: %d through A, %d through B", phase, count["A"], count["B"])
		if count[want] != 20 {
			t.Errorf("%s: want all 20 through %s", phase, want)
		}
	}
	expect("both up", "A")

	em := s.edge.Mark()
	killAt := time.Now()
	a.eng.Kill()
	waitHubEvent(t, s.edge, "tunnelDisconnected", a.addr, em, 10*time.Second)
	up := waitHubEvent(t, s.edge, "tunnelConnected", b.addr, em, 15*time.Second)
	t.Logf("hub A killed: the edge is on B %v later", up.At.Sub(killAt).Round(time.Millisecond))
	expect("A killed", "B")

	em = s.edge.Mark()
	a.restart(t)
	time.Sleep(3 * time.Second) // longer than a reconnect backoff step
	for _, ev := range s.edge.Events(em) {
		if ev.Name == "tunnelConnected" || ev.Name == "tunnelDisconnected" {
			t.Errorf("A back: the edge reported %s %s while B works", ev.Name, ev.Data)
		}
	}
	expect("A back, B still up", "B")

	em = s.edge.Mark()
	killAt = time.Now()
	b.eng.Kill()
	waitHubEvent(t, s.edge, "tunnelDisconnected", b.addr, em, 10*time.Second)
	up = waitHubEvent(t, s.edge, "tunnelConnected", a.addr, em, 15*time.Second)
	t.Logf("hub B killed: the edge is back on A %v later", up.At.Sub(killAt).Round(time.Millisecond))
	expect("B killed", "A")
}

package tunnel

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// eventLog records engine events for tests and lets them wait for one.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
}

func newEventLog() *eventLog { return &eventLog{notify: make(chan struct{}, 1)} }

func (l *eventLog) sink(ev Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// snapshot returns a copy of the events so far.
func (l *eventLog) snapshot() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

// wait returns the first event after index from that matches, failing the
// test after the timeout.
func (l *eventLog) wait(t testing.TB, from int, timeout time.Duration, match func(Event) bool) (Event, int) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		evs := l.snapshot()
		for i := from; i < len(evs); i++ {
			if match(evs[i]) {
				return evs[i], i
			}
		}
		select {
		case <-l.notify:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for an event; have %+v", timeout, evs)
		}
	}
}

func named(name string) func(Event) bool { return func(e Event) bool { return e.Name == name } }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TUNNEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// target is a TCP server on 127.0.0.2 that reads the PROXY header and hands
// each connection to a handler.
type target struct {
	ln      net.Listener
	port    int
	handler func(hdr string, c net.Conn, br *bufio.Reader)
	wg      sync.WaitGroup
	mu      sync.Mutex
	headers []string
	conns   map[net.Conn]struct{}
}

func startTarget(t testing.TB, handler func(hdr string, c net.Conn, br *bufio.Reader)) *target {
	t.Helper()
	return startTargetAt(t, "127.0.0.2:0", handler)
}

// startTargetAt is startTarget listening on addr.
func startTargetAt(t testing.TB, addr string, handler func(hdr string, c net.Conn, br *bufio.Reader)) *target {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("target listen: %v", err)
	}
	tg := &target{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, handler: handler, conns: map[net.Conn]struct{}{}}
	tg.wg.Add(1)
	go func() {
		defer tg.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.mu.Lock()
			tg.conns[c] = struct{}{}
			tg.mu.Unlock()
			tg.wg.Add(1)
			go func() {
				defer tg.wg.Done()
				defer func() {
					tg.mu.Lock()
					delete(tg.conns, c)
					tg.mu.Unlock()
					c.Close()
				}()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				tg.mu.Lock()
				tg.headers = append(tg.headers, line)
				tg.mu.Unlock()
				tg.handler(line, c, br)
			}()
		}
	}()
	t.Cleanup(tg.close)
	return tg
}

func (tg *target) close() {
	tg.ln.Close()
	tg.mu.Lock()
	for c := range tg.conns {
		c.Close()
	}
	tg.mu.Unlock()
	tg.wg.Wait()
}

func (tg *target) seenHeaders() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]string(nil), tg.headers...)
}

// echoHandler echoes everything after the header, then half-closes.
func echoHandler(_ string, c net.Conn, br *bufio.Reader) {
	io.Copy(c, br)
	c.(*net.TCPConn).CloseWrite()
}

// rig is a hub and an edge connected on loopback with a target.
type rig struct {
	hub       *Hub
	edge      *Edge
	hubEvents *eventLog
	edgeEvts  *eventLog
	target    *target
	edgeAddr  string
	secret    string
	deadPort  int // an edge port with nothing behind it on the target host
}

type rigOptions struct {
	tuning  Tuning
	secret  string // the edge's; the hub allows "s3cret-edge-1"
	handler func(hdr string, c net.Conn, br *bufio.Reader)
	noWait  bool
	// extraPort adds a listen port on the edge with no target behind it.
	extraPort bool
	// connections is the edge's tunnel connections (default 2, so that
	// every test runs over a set of several).
	connections int
	// transport is the edge's (default TransportTLS).
	transport string
	// noQUIC starts the hub without its QUIC listener (and its goroutines).
	noQUIC bool
}

// transports are the transports the tests of eachTransport run on.
var transports = []string{TransportTLS, TransportQUIC}

// eachTransport runs f as a subtest on each transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

func startRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	if o.handler == nil {
		o.handler = echoHandler
	}
	if o.secret == "" {
		o.secret = "s3cret-edge-1"
	}
	if o.connections == 0 {
		o.connections = 2
	}
	r := &rig{hubEvents: newEventLog(), edgeEvts: newEventLog(), secret: o.secret}
	r.target = startTarget(t, o.handler)
	var err error
	r.hub, err = StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Tuning: o.tuning, DisableQUIC: o.noQUIC,
		Logger: testLogger(t).With("t", "hub"), Events: r.hubEvents.sink},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1"}})
	if err != nil {
		t.Fatalf("StartHub: %v", err)
	}
	t.Cleanup(func() { r.hub.Close() })
	ports := []int{r.target.port}
	if o.extraPort {
		r.deadPort = testutil.FreePort(t, "127.0.0.1", "127.0.0.2")
		ports = append(ports, r.deadPort)
	}
	r.edge, err = StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: r.hub.Port(), EdgeID: "edge-1", Secret: o.secret,
		ListenHost: "127.0.0.1", ListenPorts: ports, StunInterval: -1,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, Tuning: o.tuning, Connections: o.connections,
		Transport: o.transport, Logger: testLogger(t).With("t", "edge"), Events: r.edgeEvts.sink})
	if err != nil {
		t.Fatalf("StartEdge: %v", err)
	}
	t.Cleanup(func() { r.edge.Close() })
	r.edgeAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.target.port))
	if !o.noWait {
		r.edgeEvts.wait(t, 0, 10*time.Second, named(EventTunnelConnected))
		r.hubEvents.wait(t, 0, 10*time.Second, named(EventEdgeConnected))
	}
	return r
}

func (r *rig) dial(t testing.TB) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", r.edgeAddr)
	if err != nil {
		t.Fatalf("dial edge: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

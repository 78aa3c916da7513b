package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// hubsRig is an edge with several hubs, each on its own fixed port (so a
// hub can be restarted where it was), and an echo target behind them all.
type hubsRig struct {
	t        *testing.T
	edge     *Edge
	edgeEvts *eventLog
	hubs     []*Hub
	addrs    []string
	port     int // the edge's listen port, the target's port
	edgeAddr string
}

const hubsEdgeID, hubsSecret = "edge-h", "s3cret-h"

// startHubsRig starts n hubs and an edge in mode over transport (the
// first of tr; TLS without).
func startHubsRig(t *testing.T, n int, mode string, tr ...string) *hubsRig {
	t.Helper()
	transport := TransportTLS
	if len(tr) > 0 {
		transport = tr[0]
	}
	r := &hubsRig{t: t, edgeEvts: newEventLog()}
	r.port = testutil.FreePort(t, "127.0.0.1", "127.0.0.2")
	startTargetAt(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(r.port)), echoHandler)
	for i := 0; i < n; i++ {
		p := testutil.FreePort(t, "127.0.0.1")
		r.addrs = append(r.addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		r.hubs = append(r.hubs, nil)
		r.startHub(i)
	}
	var err error
	r.edge, err = StartEdge(EdgeConfig{Hubs: r.addrs, HubMode: mode, EdgeID: hubsEdgeID, Secret: hubsSecret,
		ListenHost: "127.0.0.1", ListenPorts: []int{r.port}, StunInterval: -1, FirewallBackend: FirewallProcess,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, Transport: transport,
		Logger: testLogger(t).With("t", "edge"), Events: r.edgeEvts.sink})
	if err != nil {
		t.Fatalf("StartEdge: %v", err)
	}
	t.Cleanup(func() { r.edge.Close() })
	r.edgeAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	return r
}

// startHub starts hub i on its port.
func (r *hubsRig) startHub(i int) {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addrs[i])
	p, _ := strconv.Atoi(port)
	h, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TunnelPort: p, TargetHost: "127.0.0.2",
		Logger: testLogger(r.t).With("t", "hub"+strconv.Itoa(i))}, []EdgeCredential{{ID: hubsEdgeID, Secret: hubsSecret}})
	if err != nil {
		r.t.Fatalf("StartHub %d: %v", i, err)
	}
	r.hubs[i] = h
	r.t.Cleanup(func() { h.Close() })
}

// connectedTo reports which hubs the edge's status shows connected.
func (r *hubsRig) connectedTo() []bool {
	st := r.edge.Status()
	out := make([]bool, len(st.Hubs))
	for i, h := range st.Hubs {
		out[i] = h.Connected
	}
	return out
}

func (r *hubsRig) waitConnected(want ...bool) {
	r.t.Helper()
	testutil.Eventually(r.t, 10*time.Second, "edge connections "+fmtBools(want), func() bool { return cmp.Equal(r.connectedTo(), want) })
}

func fmtBools(b []bool) string {
	out := ""
	for _, v := range b {
		out += strconv.FormatBool(v) + " "
	}
	return out
}

// streamsOpened counts the streams each hub opened so far.
func (r *hubsRig) streamsOpened() []uint64 {
	out := make([]uint64, len(r.hubs))
	for i, h := range r.hubs {
		for _, e := range h.Metrics().Edges {
			out[i] += e.StreamsTotal
		}
	}
	return out
}

// tcpRoundTrip sends a message through the edge and reads its echo.
func tcpRoundTrip(addr, msg string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// load runs round trips through the edge, one after another, until stop;
// it counts them and their failures.
type load struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	done       sync.WaitGroup
	mu         sync.Mutex
	errs       []string // the first failures
}

func startLoad(addr string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := tcpRoundTrip(addr, "ping"); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 5 {
						l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *load) end() (ok, failed int64) {
	close(l.stop)
	l.done.Wait()
	return l.ok.Load(), l.failed.Load()
}

// Spread: a tunnel to every hub, and new clients over both.
func TestSpreadOverTwoHubs(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startHubsRig(t, 2, HubSpread, tr)
		r.waitConnected(true, true)
		for i := 0; i < 20; i++ {
			if err := tcpRoundTrip(r.edgeAddr, "hello"); err != nil {
				t.Fatalf("round trip %d: %v", i, err)
			}
		}
		opened := r.streamsOpened()
		if opened[0] < 5 || opened[1] < 5 {
			t.Fatalf("streams per hub %v: not spread", opened)
		}
		st := r.edge.Status()
		if !st.Connected || len(st.Hubs) != 2 || st.Hubs[0].Transport == nil || *st.Hubs[0].Transport != tr {
			t.Fatalf("edge status %+v", st)
		}
		// One tunnelConnected per hub, naming it.
		seen := map[string]bool{}
		for _, ev := range r.edgeEvts.snapshot() {
			if ev.Name == EventTunnelConnected {
				seen[ev.Data.(TunnelConnectedEvent).Hub] = true
			}
		}
		if !seen[r.addrs[0]] || !seen[r.addrs[1]] {
			t.Fatalf("tunnelConnected for %v, want both of %v", seen, r.addrs)
		}
	})
}

// A hub that dies takes only its own streams; new clients go to the other.
func TestHubLossLeavesTheOther(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startHubsRig(t, 2, HubSpread, tr)
		r.waitConnected(true, true)
		r.hubs[0].Close()
		r.waitConnected(false, true)
		ld := startLoad(r.edgeAddr, 4)
		time.Sleep(300 * time.Millisecond)
		ok, failed := ld.end()
		if failed != 0 || ok == 0 {
			t.Fatalf("with one hub down: %d round trips ok, %d failed", ok, failed)
		}
		// The hub back: it gets new streams again.
		r.startHub(0)
		r.waitConnected(true, true)
		before := r.streamsOpened()[0]
		for i := 0; i < 10; i++ {
			if err := tcpRoundTrip(r.edgeAddr, "again"); err != nil {
				t.Fatal(err)
			}
		}
		if r.streamsOpened()[0] == before {
			t.Fatal("the restarted hub got no new streams")
		}
	})
}

// A rolling restart of two hubs, each stopped gracefully (Shutdown: DRAIN
// first) and started again, under a steady load refuses no client.
func TestRollingRestartRefusesNothing(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startHubsRig(t, 2, HubSpread, tr)
		r.waitConnected(true, true)
		ld := startLoad(r.edgeAddr, 4)
		for i := range r.hubs {
			time.Sleep(200 * time.Millisecond)
			from := len(r.edgeEvts.snapshot())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := r.hubs[i].Shutdown(ctx); err != nil {
				t.Errorf("Shutdown hub %d: %v", i, err)
			}
			cancel()
			r.startHub(i)
			// The edge is back on hub i once it says so: its status may
			// still show the old tunnel for a moment after Shutdown returns
			// (over QUIC the close is a datagram of its own).
			r.edgeEvts.wait(t, from, 10*time.Second, func(e Event) bool {
				d, ok := e.Data.(TunnelConnectedEvent)
				return ok && d.Hub == r.addrs[i]
			})
			r.waitConnected(true, true)
		}
		time.Sleep(200 * time.Millisecond)
		ok, failed := ld.end()
		t.Logf("rolling restart: %d round trips, %d failed %v", ok, failed, ld.errs)
		if failed != 0 || ok == 0 {
			t.Fatalf("rolling restart: %d round trips ok, %d failed", ok, failed)
		}
	})
}

// Failover: one hub at a time in list order, the next when it fails, and
// back to the earlier one when it has returned and the current one fails.
func TestFailoverOrderAndReturn(t *testing.T) {
	r := startHubsRig(t, 2, HubFailover)
	r.waitConnected(true, false)
	if err := tcpRoundTrip(r.edgeAddr, "first"); err != nil {
		t.Fatal(err)
	}
	if o := r.streamsOpened(); o[0] != 1 || o[1] != 0 {
		t.Fatalf("streams per hub %v, want all on the first", o)
	}
	r.hubs[0].Close()
	r.waitConnected(false, true)
	if err := tcpRoundTrip(r.edgeAddr, "second"); err != nil {
		t.Fatal(err)
	}
	r.startHub(0)
	time.Sleep(300 * time.Millisecond)
	if got := r.connectedTo(); !cmp.Equal(got, []bool{false, true}) {
		t.Fatalf("the edge left a working hub for the returned one: %v", got)
	}
	r.hubs[1].Close()
	r.waitConnected(true, false)
	if err := tcpRoundTrip(r.edgeAddr, "third"); err != nil {
		t.Fatal(err)
	}
}

// A hub name that resolves to two addresses counts as two hubs, and the
// edge follows the name when its addresses change (a replica replaced).
func TestHubNameWithTwoAddresses(t *testing.T) {
	port := testutil.FreePort(t, "127.0.0.1", "127.0.0.3", "127.0.0.4")
	hubs := map[string]*Hub{}
	startAt := func(ip string) {
		h, err := StartHub(HubConfig{ListenHost: ip, TunnelPort: port, TargetHost: "127.0.0.2", Logger: testLogger(t)},
			[]EdgeCredential{{ID: hubsEdgeID, Secret: hubsSecret}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hubs[ip] = h
	}
	startAt("127.0.0.1")
	startAt("127.0.0.3")
	var mu sync.Mutex
	answer := []string{"127.0.0.1", "127.0.0.3"}
	lookup := func(_ context.Context, host string) ([]string, error) {
		if host != "hubs.test" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(answer), nil
	}
	e, err := StartEdge(EdgeConfig{Hubs: []string{"hubs.test:" + strconv.Itoa(port)}, EdgeID: hubsEdgeID, Secret: hubsSecret,
		ListenHost: "127.0.0.1", ListenPorts: []int{testutil.FreePort(t, "127.0.0.1")}, StunInterval: -1,
		FirewallBackend: FirewallProcess, LookupHost: lookup, Tuning: Tuning{hubRefresh: 100 * time.Millisecond},
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	connected := func(ips ...string) func() bool {
		return func() bool {
			var want, got []string
			for _, ip := range ips {
				want = append(want, net.JoinHostPort(ip, strconv.Itoa(port)))
			}
			for _, h := range e.Status().Hubs {
				if h.Connected {
					got = append(got, h.Address)
				}
			}
			return cmp.Equal(got, want)
		}
	}
	testutil.Eventually(t, 10*time.Second, "both addresses connected", connected("127.0.0.1", "127.0.0.3"))
	if len(hubs["127.0.0.1"].Status().ConnectedEdges) != 1 || len(hubs["127.0.0.3"].Status().ConnectedEdges) != 1 {
		t.Fatal("the edge is not connected to both hubs")
	}
	// The replica on .3 is replaced by one on .4.
	startAt("127.0.0.4")
	mu.Lock()
	answer = []string{"127.0.0.1", "127.0.0.4"}
	mu.Unlock()
	testutil.Eventually(t, 10*time.Second, "the new address connected", func() bool { return len(hubs["127.0.0.4"].Status().ConnectedEdges) == 1 })
	hubs["127.0.0.3"].Close()
	testutil.Eventually(t, 10*time.Second, "the edge on .1 and .4 only", func() bool {
		var addrs []string
		for _, h := range e.Status().Hubs {
			addrs = append(addrs, h.Address)
		}
		return cmp.Equal(addrs, []string{"127.0.0.1:" + strconv.Itoa(port), "127.0.0.4:" + strconv.Itoa(port)}) && connected("127.0.0.1", "127.0.0.4")()
	})
}

func TestHubsConfigErrors(t *testing.T) {
	base := EdgeConfig{EdgeID: "e", Secret: "s", StunInterval: -1}
	for _, tc := range []struct {
		name string
		mod  func(*EdgeConfig)
		want ConfigError
	}{
		{"hubs and hubHost", func(c *EdgeConfig) { c.Hubs, c.HubHost = []string{"a:1"}, "b" }, ConfigError{Field: "Hubs", Msg: "cannot be given with", Ref: "HubHost"}},
		{"bad port", func(c *EdgeConfig) { c.Hubs = []string{"a:1", "b:99999"} }, ConfigError{Field: "Hubs[1]", Msg: `has port "99999": must be an integer 1-65535`}},
		{"twice", func(c *EdgeConfig) { c.Hubs = []string{"a:1", "a:1"} }, ConfigError{Field: "Hubs", Msg: "lists a:1 twice"}},
		{"mode", func(c *EdgeConfig) { c.Hubs, c.HubMode = []string{"a:1"}, "random" }, ConfigError{Field: "HubMode", Msg: `must be "spread" or "failover"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			_, err := StartEdge(c)
			var ce *ConfigError
			if !errors.As(err, &ce) || !cmp.Equal(*ce, tc.want) {
				t.Fatalf("StartEdge = %v, want %v", err, tc.want)
			}
		})
	}
}

package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pires "github.com/pires/go-proxyproto"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel/firewall"
	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// udpTarget is a UDP echo server on 127.0.0.2 (or ::1) that takes the PROXY
// v2 headers of its mode off each flow's datagrams, parsed strictly by an
// independent implementation, and records them.
type udpTarget struct {
	pc   *net.UDPConn
	port int
	mode string

	mu      sync.Mutex
	headers map[netip.AddrPort][]*pires.Header // by the hub's flow socket
	bad     []string
	got     int // datagrams echoed
}

func startUDPTarget(t testing.TB, host string, port int, mode string) *udpTarget {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(host), uint16(port))))
	if err != nil {
		t.Fatalf("UDP target: %v", err)
	}
	_ = pc.SetReadBuffer(4 << 20)
	tg := &udpTarget{pc: pc, port: pc.LocalAddr().(*net.UDPAddr).Port, mode: mode, headers: make(map[netip.AddrPort][]*pires.Header)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 70000)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			tg.mu.Lock()
			seen := len(tg.headers[from]) > 0
			strip := mode == UDPProxyEvery || mode == UDPProxyFirst && !seen
			if strip {
				r := bufio.NewReader(bytes.NewReader(b))
				h, err := pires.Read(r)
				if err != nil {
					tg.bad = append(tg.bad, fmt.Sprintf("datagram %d bytes from %v: %v", n, from, err))
					tg.mu.Unlock()
					continue
				}
				tg.headers[from] = append(tg.headers[from], h)
				rest, _ := r.Peek(r.Buffered())
				if mode == UDPProxyFirst {
					if len(rest) != 0 {
						tg.bad = append(tg.bad, fmt.Sprintf("first datagram holds %d bytes after the header", len(rest)))
					}
					tg.mu.Unlock()
					continue
				}
				b = append([]byte(nil), rest...)
			}
			tg.got++
			tg.mu.Unlock()
			_, _ = pc.WriteToUDPAddrPort(b, from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return tg
}

func (tg *udpTarget) check(t testing.TB) {
	t.Helper()
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if len(tg.bad) > 0 {
		t.Fatalf("the target saw bad datagrams: %v", tg.bad)
	}
}

func (tg *udpTarget) allHeaders() []*pires.Header {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	var out []*pires.Header
	for _, hs := range tg.headers {
		out = append(out, hs...)
	}
	return out
}

type udpRig struct {
	hub      *Hub
	edge     *Edge
	target   *udpTarget
	edgeAddr netip.AddrPort
	edgeEvts *eventLog
	hubEvts  *eventLog
}

type udpRigOptions struct {
	mode      string
	host      string // the edge's listen host (default "127.0.0.1"); the target is on 127.0.0.2
	idle      time.Duration
	hubFlows  int
	edgeFlows int
	firewall  *firewall.Rules
	ports     *PortAssignment // assigned by the hub (the target's port is added to UDP when nil)
	transport string          // the edge's (default TransportTLS)
	tcpPorts  []int           // with ports nil: TCP ports assigned beside the target's UDP port
}

func startUDPRig(t testing.TB, o udpRigOptions) *udpRig {
	t.Helper()
	listen, targetHost := "127.0.0.1", "127.0.0.2"
	if o.host != "" {
		listen = o.host // ::1: the target cannot share its port there, and stays on IPv4
	}
	port := testutil.FreeUDPPort(t, listen, targetHost)
	r := &udpRig{edgeEvts: newEventLog(), hubEvts: newEventLog()}
	r.target = startUDPTarget(t, targetHost, port, o.mode)
	cred := EdgeCredential{ID: "edge-1", Secret: "s3cret-edge-1", Firewall: o.firewall, Ports: o.ports}
	if cred.Ports == nil {
		cred.Ports = &PortAssignment{UDP: []int{port}, TCP: o.tcpPorts}
	}
	var err error
	r.hub, err = StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: targetHost, UDPProxyProtocol: o.mode,
		UDPIdleTimeout: o.idle, MaxUDPFlows: o.hubFlows,
		Logger: testLogger(t).With("t", "hub"), Events: r.hubEvts.sink}, []EdgeCredential{cred})
	if err != nil {
		t.Fatalf("StartHub: %v", err)
	}
	t.Cleanup(func() { r.hub.Close() })
	r.edge, err = StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: r.hub.Port(), EdgeID: "edge-1", Secret: "s3cret-edge-1",
		ListenHost: listen, StunInterval: -1, FirewallBackend: FirewallProcess,
		UDPIdleTimeout: o.idle, MaxUDPFlows: o.edgeFlows, Transport: o.transport,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		Logger: testLogger(t).With("t", "edge"), Events: r.edgeEvts.sink})
	if err != nil {
		t.Fatalf("StartEdge: %v", err)
	}
	t.Cleanup(func() { r.edge.Close() })
	r.edgeEvts.wait(t, 0, 10*time.Second, named(EventTunnelConnected))
	r.edgeAddr = netip.AddrPortFrom(netip.MustParseAddr(listen), uint16(port))
	waitFor(t, 5*time.Second, "the UDP port bound", func() bool { return len(r.edge.Status().ListenPortsUDP) > 0 })
	return r
}

// client is a UDP socket toward the edge port.
func (r *udpRig) client(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.edgeAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends p and waits for its echo, resending a few times (UDP may
// lose datagrams, the first of a flow races the flow's setup nowhere, but
// loopback buffers can overflow under load).
func roundTrip(t testing.TB, c *net.UDPConn, p []byte) []byte {
	t.Helper()
	buf := make([]byte, 70000)
	for try := 0; try < 20; try++ {
		if _, err := c.Write(p); err != nil {
			t.Fatalf("send: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return buf[:n]
		}
	}
	t.Fatalf("no echo of a %d-byte datagram", len(p))
	return nil
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *udpRig) hubFlows() int {
	n := 0
	for _, e := range r.hub.Status().ConnectedEdges {
		n += e.ActiveUDPFlows
	}
	return n
}

func (r *udpRig) waitFlows(t testing.TB, edge, hub int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d edge and %d hub flows", edge, hub), func() bool {
		return r.edge.Status().ActiveUDPFlows == edge && r.hubFlows() == hub
	})
}

func TestUDPEchoSizes(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startUDPRig(t, udpRigOptions{transport: tr, mode: UDPProxyNone})
		c := r.client(t)
		for _, size := range []int{1, 1200, 8192, MaxDatagram} {
			p := make([]byte, size)
			rand.Read(p)
			got := roundTrip(t, c, p)
			if sha256.Sum256(got) != sha256.Sum256(p) {
				t.Fatalf("%d-byte datagram came back as %d bytes, other content", size, len(got))
			}
		}
		r.target.check(t)
		if m := r.edge.Metrics(); m.UDPFlowsActive != 1 {
			t.Fatalf("edge metrics: %d flows active, want 1", m.UDPFlowsActive)
		}
		if m := r.hub.Metrics(); len(m.Edges) != 1 || m.Edges[0].UDPFlowsActive != 1 {
			t.Fatalf("hub metrics: %+v, want 1 flow", m.Edges)
		}
	})
}

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

func TestUDPManyFlowsOwnReplies(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startUDPRig(t, udpRigOptions{transport: tr, mode: UDPProxyFirst})
		const n = 200
		time.Sleep(100 * time.Millisecond) // the sessions' last goroutines start
		base := runtime.NumGoroutine()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			c := r.client(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 2048)
				for k := 0; k < 3; k++ {
					msg := []byte(fmt.Sprintf("flow %d from %v message %d", i, c.LocalAddr(), k))
					var got []byte
					for try := 0; try < 20 && got == nil; try++ {
						c.Write(msg)
						c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
						for got == nil {
							m, err := c.Read(buf)
							if err != nil {
								break
							}
							// A late echo of an earlier message of this flow
							// (it was resent) is no one else's reply: skip it.
							if k > 0 && bytes.HasPrefix(buf[:m], msg[:len(msg)-1]) && buf[m-1] < msg[len(msg)-1] {
								continue
							}
							got = buf[:m]
						}
					}
					if !bytes.Equal(got, msg) {
						r.target.mu.Lock()
						bad := r.target.bad
						r.target.mu.Unlock()
						errs <- fmt.Errorf("flow %d got %q, want %q (target saw: %v; edge %+v)", i, got, msg, bad, r.edge.Status())
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		r.target.check(t)
		r.waitFlows(t, n, n)
		// No goroutine per flow on either side (Linux: the hub's flow poller).
		if got := runtime.NumGoroutine(); runtime.GOOS == "linux" && got > base+10 {
			t.Fatalf("%d goroutines with %d flows open, %d before", got, n, base)
		}
	})
}

func TestUDPProxyHeaderModes(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		for _, host := range []string{"127.0.0.1", "::1"} {
			for _, mode := range []string{UDPProxyFirst, UDPProxyEvery, UDPProxyNone} {
				t.Run(host+"/"+mode, func(t *testing.T) {
					if host == "::1" {
						if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
							t.Skipf("no IPv6 loopback: %v", err)
						} else {
							c.Close()
						}
					}
					opt := udpRigOptions{transport: tr, mode: mode}
					if host == "::1" {
						opt.host = "::1"
					}
					r := startUDPRig(t, opt)
					c := r.client(t)
					for k := 0; k < 3; k++ {
						msg := []byte("hello " + strconv.Itoa(k))
						if got := roundTrip(t, c, msg); !bytes.Equal(got, msg) {
							t.Fatalf("got %q, want %q", got, msg)
						}
					}
					r.target.check(t)
					hs := r.target.allHeaders()
					want := map[string]int{UDPProxyFirst: 1, UDPProxyEvery: 3, UDPProxyNone: 0}[mode]
					if len(hs) < want || mode != UDPProxyEvery && len(hs) != want {
						t.Fatalf("%d PROXY headers, want %d", len(hs), want)
					}
					client := c.LocalAddr().(*net.UDPAddr).AddrPort()
					fam := pires.UDPv4
					if host == "::1" {
						fam = pires.UDPv6
					}
					for _, h := range hs {
						if h.Version != 2 || h.Command != pires.PROXY || h.TransportProtocol != fam {
							t.Fatalf("header version %d command %v proto %v", h.Version, h.Command, h.TransportProtocol)
						}
						src, dst := h.SourceAddr.(*net.UDPAddr).AddrPort(), h.DestinationAddr.(*net.UDPAddr).AddrPort()
						if src != client || dst != r.edgeAddr {
							t.Fatalf("header %v -> %v, want %v -> %v", src, dst, client, r.edgeAddr)
						}
					}
				})
			}
		}
	})
}

func TestUDPIdleExpiryFreesBothSides(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startUDPRig(t, udpRigOptions{transport: tr, mode: UDPProxyNone, idle: 300 * time.Millisecond})
		// The baseline once both tunnel connections serve on both sides.
		waitFor(t, 5*time.Second, "both tunnel connections", func() bool {
			st := r.hub.Status()
			return len(st.ConnectedEdges) == 1 && st.ConnectedEdges[0].Connections == 2 && r.edge.Status().Connections == 2
		})
		time.Sleep(200 * time.Millisecond)
		fds, goroutines := openFDs(t), runtime.NumGoroutine()
		for i := 0; i < 5; i++ {
			c := r.client(t)
			roundTrip(t, c, []byte("x"))
			c.Close()
		}
		if e, h := r.edge.Status().ActiveUDPFlows, r.hubFlows(); e == 0 || h == 0 {
			t.Fatalf("flows before idling: edge %d hub %d", e, h)
		}
		r.waitFlows(t, 0, 0)
		if m := r.edge.Metrics(); m.UDPFlowsActive != 0 {
			t.Fatalf("edge metrics: %d flows active after idling", m.UDPFlowsActive)
		}
		if n := r.edge.firewall.fw.Open(); n != 0 {
			t.Fatalf("%d firewall tickets held after the flows idled out", n)
		}
		// Every flow's socket at the hub is closed and its reader gone.
		if !testutil.Poll(5*time.Second, func() bool { return openFDs(t) <= fds && runtime.NumGoroutine() <= goroutines }) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d descriptors (before %d), %d goroutines (before %d)\n%s", openFDs(t), fds, runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
		}
		// A flow that sent again starts anew.
		c := r.client(t)
		roundTrip(t, c, []byte("again"))
		r.waitFlows(t, 1, 1)
	})
}

func TestUDPFlowCapEvictsLeastRecentlyUsed(t *testing.T) {
	t.Run("edge", func(t *testing.T) {
		r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone, edgeFlows: 3})
		testLRU(t, r, func() int { return r.edge.Status().ActiveUDPFlows })
	})
	t.Run("hub", func(t *testing.T) {
		r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone, hubFlows: 3})
		testLRU(t, r, r.hubFlows)
	})
}

// testLRU checks the cap of 3 flows that one side has; capped counts that
// side's flows.
func testLRU(t *testing.T, r *udpRig, capped func() int) {
	cs := make([]*net.UDPConn, 4)
	for i := range 3 {
		cs[i] = r.client(t)
		roundTrip(t, cs[i], []byte("a"))
	}
	roundTrip(t, cs[0], []byte("used again")) // cs[1] is now the least recently used
	r.waitFlows(t, 3, 3)
	cs[3] = r.client(t)
	roundTrip(t, cs[3], []byte("new"))
	r.waitFlows(t, 3, 3)
	// cs[0] and cs[2] still have their flows: their replies come at once.
	for _, i := range []int{0, 2, 3} {
		roundTrip(t, cs[i], []byte("still here"))
	}
	r.waitFlows(t, 3, 3)
	// cs[1] gets a new flow, which evicts another.
	roundTrip(t, cs[1], []byte("back"))
	r.waitFlows(t, 3, 3)
	// A flood of new source ports stays within the cap on the side that
	// has it, and the other side follows its UDP_CLOSEs.
	for i := 0; i < 50; i++ {
		c := r.client(t)
		c.Write([]byte("flood"))
		if n := capped(); n > 3 {
			t.Fatalf("%d flows under a flood, cap 3", n)
		}
	}
	waitFor(t, 5*time.Second, "both sides within the cap", func() bool {
		return r.edge.Status().ActiveUDPFlows <= 3 && r.hubFlows() <= 3
	})
}

func TestUDPReconnectDropsFlows(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startUDPRig(t, udpRigOptions{transport: tr, mode: UDPProxyFirst})
		c := r.client(t)
		roundTrip(t, c, []byte("before"))
		r.waitFlows(t, 1, 1)
		from := len(r.edgeEvts.snapshot())
		for _, e := range r.hub.edgesNow() {
			for _, s := range e {
				s.Close("test: drop the tunnel")
			}
		}
		_, idx := r.edgeEvts.wait(t, from, 10*time.Second, named(EventTunnelDisconnected))
		r.edgeEvts.wait(t, idx+1, 10*time.Second, named(EventTunnelConnected))
		r.waitFlows(t, 0, 0)
		if n := r.edge.firewall.fw.Open(); n != 0 {
			t.Fatalf("%d firewall tickets held after the flows were dropped", n)
		}
		roundTrip(t, c, []byte("after"))
		r.waitFlows(t, 1, 1)
		if n := r.edge.firewall.fw.Open(); n != 1 {
			t.Fatalf("%d firewall tickets held for one flow", n)
		}
		// The new flow announced itself anew: a second header from the same client.
		waitFor(t, 5*time.Second, "two PROXY headers", func() bool { return len(r.target.allHeaders()) == 2 })
		r.target.check(t)
	})
}

// edgesNow returns the connections of every connected edge (tests only).
func (h *Hub) edgesNow() [][]tunnelConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out [][]tunnelConn
	for _, e := range h.edges {
		out = append(out, e.connsLocked())
	}
	return out
}

func TestUDPFirewall(t *testing.T) {
	t.Run("blocked", func(t *testing.T) {
		r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone, firewall: &firewall.Rules{BlockedIPs: []string{"127.0.0.0/8"}}})
		c := r.client(t)
		for i := 0; i < 5; i++ {
			c.Write([]byte("blocked"))
		}
		waitFor(t, 5*time.Second, "refusals counted", func() bool { return r.edge.Status().FirewallRefused >= 5 })
		time.Sleep(100 * time.Millisecond)
		r.target.mu.Lock()
		got := r.target.got
		r.target.mu.Unlock()
		if got != 0 || r.hubFlows() != 0 || r.edge.Status().ActiveUDPFlows != 0 {
			t.Fatalf("a blocked client reached the target (%d datagrams) or has flows", got)
		}
	})
	t.Run("blocked later", func(t *testing.T) {
		r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone})
		c := r.client(t)
		roundTrip(t, c, []byte("open"))
		r.waitFlows(t, 1, 1)
		port := int(r.edgeAddr.Port())
		if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1", Ports: &PortAssignment{UDP: []int{port}},
			Firewall: &firewall.Rules{BlockedIPs: []string{"127.0.0.0/8"}}}}); err != nil {
			t.Fatal(err)
		}
		r.waitFlows(t, 0, 0) // the edge closed the flow and told the hub
		c.Write([]byte("blocked now"))
		waitFor(t, 5*time.Second, "the datagram refused", func() bool { return r.edge.Status().FirewallRefused >= 1 })
	})
	t.Run("maxConnectionsPerIp counts flows", func(t *testing.T) {
		r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone, firewall: &firewall.Rules{MaxConnectionsPerIP: 2}})
		a, b, c := r.client(t), r.client(t), r.client(t)
		roundTrip(t, a, []byte("1"))
		roundTrip(t, b, []byte("2"))
		c.Write([]byte("3"))
		waitFor(t, 5*time.Second, "the third flow refused", func() bool { return r.edge.Status().FirewallRefused >= 1 })
		r.waitFlows(t, 2, 2)
	})
}

func TestUDPRemovedPortKeepsFlows(t *testing.T) {
	r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone})
	old := r.client(t)
	roundTrip(t, old, []byte("before"))
	from := len(r.edgeEvts.snapshot())
	if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1", Ports: &PortAssignment{UDP: []int{}}}}); err != nil {
		t.Fatal(err)
	}
	r.edgeEvts.wait(t, from, 5*time.Second, named(EventPortsAssigned))
	if got := r.edge.Status().ListenPortsUDP; len(got) != 0 {
		t.Fatalf("UDP ports bound after removal: %v", got)
	}
	roundTrip(t, old, []byte("existing flow lives on"))
	fresh := r.client(t)
	fresh.Write([]byte("new flow"))
	fresh.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := fresh.Read(make([]byte, 100)); err == nil {
		t.Fatal("a new flow was carried on a removed port")
	}
	r.waitFlows(t, 1, 1)
	// Assigned again: the same socket serves old and new flows.
	from = len(r.edgeEvts.snapshot())
	if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1", Ports: &PortAssignment{UDP: []int{int(r.edgeAddr.Port())}}}}); err != nil {
		t.Fatal(err)
	}
	r.edgeEvts.wait(t, from, 5*time.Second, named(EventPortsAssigned))
	roundTrip(t, fresh, []byte("now taken"))
	roundTrip(t, old, []byte("still"))
	r.waitFlows(t, 2, 2)
}

func TestUDPRemovedPortClosesWithLastFlow(t *testing.T) {
	r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone, idle: 300 * time.Millisecond})
	old := r.client(t)
	roundTrip(t, old, []byte("before"))
	from := len(r.edgeEvts.snapshot())
	if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1", Ports: &PortAssignment{UDP: []int{}}}}); err != nil {
		t.Fatal(err)
	}
	r.edgeEvts.wait(t, from, 5*time.Second, named(EventPortsAssigned))
	r.waitFlows(t, 0, 0)
	// The socket is closed with its last flow: the port can be bound again.
	waitFor(t, 5*time.Second, "the port free again", func() bool {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(r.edgeAddr))
		if err != nil {
			return false
		}
		pc.Close()
		return true
	})
}

// A tunnel that cannot take datagrams as fast as they come drops them,
// counted, with a bounded queue.
func TestUDPCongestionDropsDatagrams(t *testing.T) {
	s := &session{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer s.cancel()
	s.ctrl = newControlQueue()
	p := make([]byte, 1200)
	sent := 0
	for i := 0; i < 2000; i++ {
		if s.SendDatagram(1, p) {
			sent++
		}
	}
	if s.udp.bytes > udpQueueBytes || s.udp.data > udpQueueCount {
		t.Fatalf("queue holds %d bytes in %d datagrams, beyond its bounds", s.udp.bytes, s.udp.data)
	}
	if sent == 2000 || sent != s.udp.data {
		t.Fatalf("%d of 2000 queued, the queue holds %d: none refused", sent, s.udp.data)
	}
	if s.SendDatagram(1, make([]byte, MaxDatagram+1)) {
		t.Fatal("an oversized datagram was queued")
	}
	// A turn at the write lock takes at most a batch (or one datagram).
	batch := s.udp.take(nil, udpBatchBytes)
	if n := len(batch) * (headerLen + 1200); n > udpBatchBytes+headerLen+1200 || len(batch) == 0 {
		t.Fatalf("one turn took %d datagrams", len(batch))
	}
	for _, e := range batch {
		putBuf(e.bp)
	}
	s.udp.drain()
}

// rawPeerSession runs a session of the given side over loopback TCP whose
// peer announced caps, with flows as its flow handler, and returns the
// peer's raw end and the session's result.
func rawPeerSession(t *testing.T, hub bool, caps uint32, flows *flowHandler) (*session, net.Conn, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(conn, hub, DefaultTuning(), peerParams{window: DefaultWindow, caps: caps}, testLogger(t), sessionHooks{})
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- s.Serve(&streamHandler{flows: flows})
	}()
	t.Cleanup(func() { s.Close("test over"); <-finished })
	return s, raw, done
}

// Flow frames the other way round or without capability bit 3 end the
// tunnel as protocol errors, and a session whose peer lacks the bit opens
// no flows.
func TestUDPFrameDirectionAndCapability(t *testing.T) {
	nop := &flowHandler{opened: func(uint32, proxyproto.Header) {}, data: func(uint32, []byte) {}, closed: func(uint32) {}}
	edgeSide := &flowHandler{data: func(uint32, []byte) {}, closed: func(uint32) {}}
	blk := appendFlowOpen(nil, proxyproto.Header{Source: netip.MustParseAddrPort("198.51.100.7:4242"), Destination: netip.MustParseAddrPort("127.0.0.1:53")})
	for _, tc := range []struct {
		name  string
		hub   bool
		caps  uint32
		h     *flowHandler
		frame []byte
		want  string
	}{
		{"UDP_OPEN from the hub", false, ourCaps, edgeSide, appendFrame(nil, 1, frameUDPOpen, blk), "unexpected UDP_OPEN"},
		{"UDP_DATA from a hub without the bit", false, ourCaps &^ capUDP, edgeSide, appendFrame(nil, 1, frameUDPData, []byte("x")), "carries no UDP"},
		{"UDP_OPEN from an edge without the bit", true, ourCaps &^ capUDP, nop, appendFrame(nil, 1, frameUDPOpen, blk), "carries no UDP"},
		{"UDP_DATA to a side with no flow handler", true, ourCaps, nil, appendFrame(nil, 1, frameUDPData, []byte("x")), "carries no UDP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, raw, done := rawPeerSession(t, tc.hub, tc.caps, tc.h)
			raw.Write(tc.frame)
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "protocol error") || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("session ended with %v, want a protocol error about %q", err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the session did not end")
			}
		})
	}
	t.Run("no flows toward a hub without the bit", func(t *testing.T) {
		s, _, _ := rawPeerSession(t, false, ourCaps&^capUDP, edgeSide)
		if _, err := s.OpenFlow(proxyproto.Header{Source: netip.MustParseAddrPort("198.51.100.7:1"), Destination: netip.MustParseAddrPort("127.0.0.1:53")}); err != errNoUDP {
			t.Fatalf("OpenFlow: %v, want %v", err, errNoUDP)
		}
	})
}

// An edge session toward a peer that stops reading drops datagrams once its
// queue is full, counted, and the sender never waits.
func TestUDPStalledTunnelDropsDatagrams(t *testing.T) {
	s, _, _ := rawPeerSession(t, false, ourCaps, &flowHandler{data: func(uint32, []byte) {}, closed: func(uint32) {}})
	id, err := s.OpenFlow(proxyproto.Header{Source: netip.MustParseAddrPort("127.0.0.1:4000"), Destination: netip.MustParseAddrPort("127.0.0.1:53")})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1200)
	const n = 40000 // 48 MB: far more than the socket buffers and the queue hold
	done := make(chan int)
	go func() {
		sent := 0
		for i := 0; i < n; i++ {
			if s.SendDatagram(id, p) {
				sent++
			}
		}
		done <- sent
	}()
	var sent int
	select {
	case sent = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("SendDatagram blocked on a stalled tunnel")
	}
	s.udp.mu.Lock()
	queued, count := s.udp.bytes, s.udp.data
	s.udp.mu.Unlock()
	if queued > udpQueueBytes || count > udpQueueCount {
		t.Fatalf("%d bytes in %d datagrams queued, beyond the bounds", queued, count)
	}
	if sent == n || count > sent {
		t.Fatalf("%d of %d taken, the queue holds %d: none refused", sent, n, count)
	}
}

// The hub counts the replies a congested tunnel cannot take, and getHubStatus
// shows them, with the datagrams a target's socket could not take, in the
// edge's entry.
func TestUDPHubCountsDroppedDatagrams(t *testing.T) {
	s := &session{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer s.cancel()
	s.ctrl = newControlQueue()
	f := &hubFlows{}
	fl := &hubFlow{key: hubFlowKey{conn: s, id: 1}, owner: f}
	p := make([]byte, 1200)
	for i := 0; i < 2000; i++ {
		f.toEdge(fl, p)
	}
	if d := f.droppedToEdge.Load(); d == 0 || int(d) != 2000-s.udp.data {
		t.Fatalf("the hub counted %d replies dropped, the tunnel's queue refused %d", d, 2000-s.udp.data)
	}

	r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone})
	roundTrip(t, r.client(t), []byte("open"))
	r.waitFlows(t, 1, 1)
	r.hub.mu.Lock()
	for _, e := range r.hub.edges {
		e.flows.droppedToEdge.Add(3)
		e.flows.droppedToTarget.Add(2)
	}
	r.hub.mu.Unlock()
	if st := r.hub.Status().ConnectedEdges; len(st) != 1 || st[0].UDPDatagramsDropped != 5 {
		t.Fatalf("getHubStatus connectedEdges %+v, want udpDatagramsDropped 5", st)
	}
}

package tunnel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/serve-zone/remoteingress/internal/ratelog"
	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel/firewall"
)

// The edge firewall end to end (CONTRACT section 7): a real hub whose
// allow list entry carries the firewall, a real edge that gets it in
// ASSIGN, and clients on loopback that pick their source address (127.0.0.3
// and the like) by binding the dialer, so that one machine plays many
// client IPs. The edge always runs with FirewallProcess: the host's kernel
// firewall is never touched.

const fwEdgeID, fwSecret = "edge-fw", "fw-s3cret-7f3a91c2d4e5b6a8"

// fwRig is a hub that gives the edge a firewall, the edge, and (unless the
// edge listens on every address) an echo target on 127.0.0.2 behind the
// edge's one TCP port, counting its connections by client address.
type fwRig struct {
	*assignRig
	port     int    // the edge's TCP port
	addr     string // where clients dial it
	target   *fwTarget
	ports    *PortAssignment // what the entry assigns; nil: the edge's own ports
	edgeLogs *testutil.SyncBuffer
	hubLogs  *testutil.SyncBuffer
}

type fwRigOptions struct {
	listenHost string          // the edge's (default 127.0.0.1)
	rules      *firewall.Rules // the entry's firewall at start
	// own leaves Ports out of the entry: the edge listens on its own port.
	own bool
	// noTarget starts no target: for an edge listening on all addresses,
	// which the target's address would be one of.
	noTarget bool
	// transport is the edge's (default TransportTLS).
	transport string
}

// fwTarget is an echo target that counts its open connections by the
// client address of their PROXY header.
type fwTarget struct {
	*target
	mu   sync.Mutex
	live map[string]int
}

// proxySource is the client address of a PROXY v1 header line.
func proxySource(hdr string) string {
	f := strings.Fields(hdr)
	if len(f) < 6 || f[0] != "PROXY" {
		return "malformed header " + strconv.Quote(hdr)
	}
	return f[2]
}

func startFwTarget(t *testing.T, port int) *fwTarget {
	t.Helper()
	ft := &fwTarget{live: map[string]int{}}
	ft.target = startTargetAt(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(port)), func(hdr string, c net.Conn, br *bufio.Reader) {
		src := proxySource(hdr)
		ft.mu.Lock()
		ft.live[src]++
		ft.mu.Unlock()
		defer func() {
			ft.mu.Lock()
			ft.live[src]--
			ft.mu.Unlock()
		}()
		echoHandler(hdr, c, br)
	})
	return ft
}

// sources is the client address of every connection the target got, in
// order.
func (ft *fwTarget) sources() []string {
	var out []string
	for _, h := range ft.seenHeaders() {
		out = append(out, proxySource(h))
	}
	return out
}

// liveFrom is how many connections from src the target has open.
func (ft *fwTarget) liveFrom(src string) int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.live[src]
}

// fwLogger logs at every level into buf (and to stderr with TUNNEL_TEST_LOG).
func fwLogger(buf *testutil.SyncBuffer, side string) *slog.Logger {
	var w io.Writer = buf
	if os.Getenv("TUNNEL_TEST_LOG") != "" {
		w = io.MultiWriter(buf, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("t", side)
}

func startFirewallRig(t *testing.T, o fwRigOptions) *fwRig {
	t.Helper()
	if o.listenHost == "" {
		o.listenHost = "127.0.0.1"
	}
	r := &fwRig{assignRig: &assignRig{hubEvents: newEventLog(), edgeEvts: newEventLog()},
		edgeLogs: new(testutil.SyncBuffer), hubLogs: new(testutil.SyncBuffer)}
	if o.noTarget {
		r.port = testutil.FreePort(t, o.listenHost)
	} else {
		r.port = testutil.FreePort(t, o.listenHost, "127.0.0.2")
		r.target = startFwTarget(t, r.port)
	}
	dialHost := o.listenHost
	if dialHost == "::" {
		dialHost = "127.0.0.1"
	}
	r.addr = net.JoinHostPort(dialHost, strconv.Itoa(r.port))
	var own []int
	if o.own {
		own = []int{r.port}
	} else {
		r.ports = &PortAssignment{TCP: []int{r.port}}
	}
	var err error
	r.hub, err = StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2",
		Logger: fwLogger(r.hubLogs, "hub"), Events: r.hubEvents.sink}, []EdgeCredential{r.entry(o.rules)})
	if err != nil {
		t.Fatalf("StartHub: %v", err)
	}
	t.Cleanup(func() { r.hub.Close() })
	r.hubPort = r.hub.Port()
	r.edge, err = StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: r.hubPort, EdgeID: fwEdgeID, Secret: fwSecret,
		ListenHost: o.listenHost, ListenPorts: own, StunInterval: -1, FirewallBackend: FirewallProcess,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, Transport: o.transport,
		Logger: fwLogger(r.edgeLogs, "edge"), Events: r.edgeEvts.sink})
	if err != nil {
		t.Fatalf("StartEdge: %v", err)
	}
	t.Cleanup(func() { r.edge.Close() })
	r.edgeEvts.wait(t, 0, 10*time.Second, named(EventTunnelConnected))
	r.waitAssigned(t, 0, []int{r.port}, []int{})
	return r
}

// entry is the edge's allow list entry with rules.
func (r *fwRig) entry(rules *firewall.Rules) EdgeCredential {
	return EdgeCredential{ID: fwEdgeID, Secret: fwSecret, Ports: r.ports, Firewall: rules}
}

// setRules gives the edge rules through the hub and waits until it has
// applied them. rules must differ from the ones in force.
func (r *fwRig) setRules(t *testing.T, rules *firewall.Rules) {
	t.Helper()
	from := len(r.edgeEvts.snapshot())
	if err := r.hub.SetAllowedEdges([]EdgeCredential{r.entry(rules)}); err != nil {
		t.Fatal(err)
	}
	r.waitAssigned(t, from, []int{r.port}, []int{})
}

// refused is the edge's firewallRefused, checked to be the same in its
// status and its metrics.
func (r *fwRig) refused(t *testing.T) uint64 {
	t.Helper()
	st, m := r.edge.Status().FirewallRefused, r.edge.Metrics().FirewallRefused
	if st != m {
		t.Fatalf("firewallRefused %d in the status, %d in the metrics", st, m)
	}
	return st
}

// hubStreams is how many streams the hub got from the edge.
func (r *fwRig) hubStreams() uint64 {
	for _, e := range r.hub.Metrics().Edges {
		if e.EdgeID == fwEdgeID {
			return e.StreamsTotal
		}
	}
	return 0
}

// hubStreamsOpened counts the hub's streamOpened events.
func (r *fwRig) hubStreamsOpened() int {
	n := 0
	for _, ev := range r.hubEvents.snapshot() {
		if ev.Name == EventStreamOpened {
			n++
		}
	}
	return n
}

// wantCounts checks what the firewall refused and what reached the hub and
// the target.
func (r *fwRig) wantCounts(t *testing.T, refused uint64, sources []string) {
	t.Helper()
	if got := r.refused(t); got != refused {
		t.Errorf("firewallRefused = %d, want %d", got, refused)
	}
	if got := r.hubStreams(); got != uint64(len(sources)) {
		t.Errorf("the hub got %d streams, want %d (one per admitted client)", got, len(sources))
	}
	if got := r.hubStreamsOpened(); got != len(sources) {
		t.Errorf("%d streamOpened events at the hub, want %d", got, len(sources))
	}
	if r.target != nil {
		if diff := cmp.Diff(sources, r.target.sources()); diff != "" {
			t.Errorf("the clients the target saw (-want +got):\n%s", diff)
		}
	}
}

// noReconnect checks that the tunnel stayed up: no tunnelDisconnected, and
// the hub's tunnel is the one connected at connectedAt.
func (r *fwRig) noReconnect(t *testing.T, connectedAt int64) {
	t.Helper()
	for _, ev := range r.edgeEvts.snapshot() {
		if ev.Name == EventTunnelDisconnected {
			t.Fatalf("the tunnel reconnected: %+v", ev)
		}
	}
	if st := r.hub.Status(); len(st.ConnectedEdges) != 1 || st.ConnectedEdges[0].ConnectedAt != connectedAt {
		t.Fatalf("the hub's tunnel changed: %+v", st.ConnectedEdges)
	}
}

// tryDialFrom connects to addr from the source address src; the
// connection is closed at the end of the test. On loopback the edge can
// accept and reset a connection before the dialer has looked at it: the
// dial then fails with a reset.
func tryDialFrom(t testing.TB, src, addr string) (*net.TCPConn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), nil
}

// dialFrom is tryDialFrom that fails the test when the dial fails.
func dialFrom(t testing.TB, src, addr string) *net.TCPConn {
	t.Helper()
	c, err := tryDialFrom(t, src, addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	return c
}

// tryEcho sends msg on c and reads it back; an error says c was closed (or
// the echo went wrong).
func tryEcho(c *net.TCPConn, msg string) error {
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// checkEcho fails the test unless msg comes back on c.
func checkEcho(t testing.TB, c *net.TCPConn, msg string) {
	t.Helper()
	if err := tryEcho(c, msg); err != nil {
		t.Fatalf("echo of %q from %s: %v", msg, c.LocalAddr(), err)
	}
}

// echoFrom connects from src, checks an echo of msg and leaves the
// connection open.
func echoFrom(t testing.TB, src, addr, msg string) *net.TCPConn {
	t.Helper()
	c := dialFrom(t, src, addr)
	checkEcho(t, c, msg)
	return c
}

// isClosedErr reports a read error of a connection the peer closed: EOF
// or a reset.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isReset reports a dial error that is the edge's reset of the
// connection: the handshake went through, so something listened.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// expectEnded fails the test unless c is closed by the peer within 5 s
// without sending a byte.
func expectEnded(t testing.TB, c *net.TCPConn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 {
		t.Fatalf("%s: got %q, want the connection closed", what, buf[:n])
	}
	if !isClosedErr(err) {
		t.Fatalf("%s: read = %v, want EOF or a reset", what, err)
	}
}

// refuseFrom connects from src and checks that the connection is closed at
// once, without a byte, although the client sends some.
func refuseFrom(t testing.TB, src, addr string) {
	t.Helper()
	c, err := tryDialFrom(t, src, addr)
	if isReset(err) {
		return // reset before the dial returned
	}
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	c.Write([]byte("must not cross the tunnel")) // may fail: the edge may have reset already
	expectEnded(t, c, "client from "+src)
	c.Close()
}

// A client inside a blocked IPv4 CIDR is closed at once without a byte, a
// client outside passes; firewallRefused counts exactly the refusals, and
// nothing of a refused connection reaches the hub or the target.
func TestFirewallBlocksIPv4CIDR(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startFirewallRig(t, fwRigOptions{transport: tr, rules: &firewall.Rules{BlockedIPs: []string{"127.0.0.3/32", "127.0.1.0/24"}}})
		refuseFrom(t, "127.0.0.3", r.addr)
		refuseFrom(t, "127.0.1.9", r.addr)
		echoFrom(t, "127.0.0.4", r.addr, "from 127.0.0.4")
		echoFrom(t, "127.0.2.9", r.addr, "from 127.0.2.9")
		refuseFrom(t, "127.0.1.200", r.addr)
		// The edge handles its clients in the order they come: once this one
		// has echoed, the refusal before it is complete.
		echoFrom(t, "127.0.0.4", r.addr, "from 127.0.0.4 again")
		r.wantCounts(t, 3, []string{"127.0.0.4", "127.0.2.9", "127.0.0.4"})
	})
}

// IPv6: on an edge listening on ::1, an IPv6 rule that does not match
// (2001:db8::/32) and IPv4 rules let ::1 pass; ::1/128 refuses it, and
// closes the connection it has open.
func TestFirewallBlocksIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	r := startFirewallRig(t, fwRigOptions{listenHost: "::1",
		rules: &firewall.Rules{BlockedIPs: []string{"2001:db8::/32", "127.0.0.0/8"}}})
	open := echoFrom(t, "::1", r.addr, "IPv6 passes")
	r.wantCounts(t, 0, []string{"::1"})

	r.setRules(t, &firewall.Rules{BlockedIPs: []string{"2001:db8::/32", "::1/128"}})
	expectEnded(t, open, "the open connection from ::1 after ::1/128 is blocked")
	refuseFrom(t, "::1", r.addr)
	r.wantCounts(t, 1, []string{"::1"})
}

// An IPv4 client of an edge listening dual-stack arrives as an IPv4-mapped
// IPv6 address; an IPv4 rule blocks it, and so does the same rule written
// in mapped form, while another IPv4 client passes the firewall.
func TestFirewallIPv4MappedClients(t *testing.T) {
	requireDualStack(t)
	for _, tc := range []struct{ name, rule string }{
		{"IPv4 rule", "127.0.0.3"},
		{"mapped rule", "::ffff:127.0.0.3"},
		{"mapped CIDR", "::ffff:127.0.0.0/126"}, // 127.0.0.0-127.0.0.3
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every address of the host reaches an edge on "::", the hub's
			// targets too: the hub goes before clients arrive, so that
			// what the firewall admits is closed for want of a tunnel
			// instead of looping back into the edge.
			r := startFirewallRig(t, fwRigOptions{listenHost: "::", noTarget: true,
				rules: &firewall.Rules{BlockedIPs: []string{tc.rule}}})
			r.hub.Close()
			r.edgeEvts.wait(t, 0, 5*time.Second, named(EventTunnelDisconnected))

			refuseFrom(t, "127.0.0.3", r.addr)
			if got := r.refused(t); got != 1 {
				t.Fatalf("firewallRefused = %d after the blocked client, want 1", got)
			}
			c := dialFrom(t, "127.0.0.4", r.addr)
			expectEnded(t, c, "client from 127.0.0.4 (no tunnel)")
			if got := r.refused(t); got != 1 {
				t.Fatalf("firewallRefused = %d after the client it does not block, want 1", got)
			}
			logs := r.edgeLogs.String()
			if n := strings.Count(logs, `msg="no tunnel, closing client connection"`); n != 1 {
				t.Fatalf("%d clients got past the firewall, want 1 (127.0.0.4):\n%s", n, logs)
			}
			if !strings.Contains(logs, `msg="client refused by the firewall"`) || !strings.Contains(logs, "client=127.0.0.3 reason=blocked") {
				t.Fatalf("no refusal of 127.0.0.3 (in its IPv4 form) logged:\n%s", logs)
			}
		})
	}
}

// requireDualStack skips the test unless a listener on "::" gets IPv4
// clients as IPv4-mapped addresses.
func requireDualStack(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("cannot listen on [::]: %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	c := dialFrom(t, "127.0.0.3", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if a := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); !a.Is4In6() {
		t.Skipf("a listener on [::] sees 127.0.0.3 as %s, not IPv4-mapped", a)
	}
}

// A non-empty allow-list admits only its addresses.
func TestFirewallAllowList(t *testing.T) {
	r := startFirewallRig(t, fwRigOptions{rules: &firewall.Rules{AllowedIPs: []string{"127.0.0.4"}}})
	echoFrom(t, "127.0.0.4", r.addr, "allowed")
	refuseFrom(t, "127.0.0.3", r.addr)
	refuseFrom(t, "127.0.0.1", r.addr)
	echoFrom(t, "127.0.0.4", r.addr, "allowed again")
	r.wantCounts(t, 2, []string{"127.0.0.4", "127.0.0.4"})
}

// maxConnectionsPerIp caps what one client IP has open at once, not what
// others have; a connection that ended makes room again.
func TestFirewallMaxConnectionsPerIP(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startFirewallRig(t, fwRigOptions{transport: tr, rules: &firewall.Rules{MaxConnectionsPerIP: 2}})
		a := echoFrom(t, "127.0.0.3", r.addr, "first")
		b := echoFrom(t, "127.0.0.3", r.addr, "second")
		refuseFrom(t, "127.0.0.3", r.addr)
		other := echoFrom(t, "127.0.0.4", r.addr, "another IP")
		checkEcho(t, b, "the second still works")

		a.Close()
		testutil.Eventually(t, 5*time.Second, "the closed connection's stream to end", func() bool {
			return r.edge.firewall.fw.Open() == 2 && r.target.liveFrom("127.0.0.3") == 1
		})
		c := echoFrom(t, "127.0.0.3", r.addr, "room again")
		refuseFrom(t, "127.0.0.3", r.addr)
		checkEcho(t, b, "the second after all")
		checkEcho(t, c, "the third after all")
		checkEcho(t, other, "the other IP after all")
		r.wantCounts(t, 2, []string{"127.0.0.3", "127.0.0.3", "127.0.0.4", "127.0.0.3"})
	})
}

// A cap that lands counts the connections already open, and closes none
// of them: only new ones are refused.
func TestFirewallNewCapCountsOpenConnections(t *testing.T) {
	r := startFirewallRig(t, fwRigOptions{})
	connectedAt := r.hub.Status().ConnectedEdges[0].ConnectedAt
	a := echoFrom(t, "127.0.0.3", r.addr, "before the cap")
	b := echoFrom(t, "127.0.0.3", r.addr, "before the cap, second")
	r.setRules(t, &firewall.Rules{MaxConnectionsPerIP: 2})
	refuseFrom(t, "127.0.0.3", r.addr)
	checkEcho(t, a, "under the cap")
	checkEcho(t, b, "under the cap, second")
	echoFrom(t, "127.0.0.4", r.addr, "another IP")
	r.wantCounts(t, 1, []string{"127.0.0.3", "127.0.0.3", "127.0.0.4"})
	r.noReconnect(t, connectedAt)
}

// connectionRatePerIp admits a burst of that many new connections of one
// client IP, refuses the next, leaves other IPs alone, and admits again
// once the bucket has refilled.
func TestFirewallConnectionRatePerIP(t *testing.T) {
	const rate = 3
	r := startFirewallRig(t, fwRigOptions{rules: &firewall.Rules{ConnectionRatePerIP: rate}})
	// The burst must reach the edge within 1/rate s, before a token comes
	// back; a run too slow for that is inconclusive and tried again from
	// another address.
	for try, src := range []string{"127.0.0.3", "127.0.0.13", "127.0.0.23"} {
		before := r.refused(t)
		start := time.Now()
		conns := make([]*net.TCPConn, rate+1)
		var last error
		for i := range conns {
			conns[i], last = tryDialFrom(t, src, r.addr)
		}
		for i, c := range conns[:rate] {
			if c == nil {
				t.Fatalf("connection %d of the burst from %s not admitted", i, src)
			}
			checkEcho(t, c, fmt.Sprintf("burst %d from %s", i, src))
		}
		err := last
		if err == nil {
			err = tryEcho(conns[rate], "one too many")
		}
		elapsed := time.Since(start)
		if err == nil {
			if elapsed < time.Second/rate || try == 2 {
				t.Fatalf("connection %d of %s within %s admitted, want refused", rate+1, src, elapsed)
			}
			t.Logf("burst from %s took %s, more than the refill of a token: again", src, elapsed)
			continue
		}
		if !isClosedErr(err) && !isReset(err) {
			t.Fatalf("connection %d of %s: %v, want closed", rate+1, src, err)
		}
		if got := r.refused(t); got != before+1 {
			t.Fatalf("firewallRefused = %d, want %d", got, before+1)
		}
		// Another IP has its own bucket.
		for i := range rate {
			echoFrom(t, "127.0.0.4", r.addr, fmt.Sprintf("other IP %d", i))
		}
		// A refused attempt takes no token: retrying until admitted does
		// not delay the admission.
		testutil.Eventually(t, 5*time.Second, src+" to be admitted again", func() bool {
			c, err := tryDialFrom(t, src, r.addr)
			if err != nil {
				return false
			}
			defer c.Close()
			return tryEcho(c, "again") == nil
		})
		return
	}
}

// A block that lands while a client's connection is open closes it at the
// client and at the target; another client's connection open at the same
// time goes on working, and the tunnel stays up.
func TestFirewallBlockClosesOpenConnections(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startFirewallRig(t, fwRigOptions{transport: tr})
		connectedAt := r.hub.Status().ConnectedEdges[0].ConnectedAt
		blocked := echoFrom(t, "127.0.0.3", r.addr, "before the block")
		blocked2 := echoFrom(t, "127.0.0.3", r.addr, "before the block, second")
		kept := echoFrom(t, "127.0.0.4", r.addr, "before the block, other IP")
		if n := r.target.liveFrom("127.0.0.3"); n != 2 {
			t.Fatalf("the target has %d connections from 127.0.0.3, want 2", n)
		}

		r.setRules(t, &firewall.Rules{BlockedIPs: []string{"127.0.0.3"}})
		expectEnded(t, blocked, "open connection of the blocked client")
		expectEnded(t, blocked2, "second open connection of the blocked client")
		testutil.Eventually(t, 5*time.Second, "the target's connections from 127.0.0.3 to end", func() bool {
			return r.target.liveFrom("127.0.0.3") == 0
		})
		checkEcho(t, kept, "after the block")
		refuseFrom(t, "127.0.0.3", r.addr)
		checkEcho(t, kept, "after the refusal")
		if n := r.target.liveFrom("127.0.0.4"); n != 1 {
			t.Fatalf("the target has %d connections from 127.0.0.4, want 1", n)
		}
		r.wantCounts(t, 1, []string{"127.0.0.3", "127.0.0.3", "127.0.0.4"})
		r.noReconnect(t, connectedAt)
	})
}

// A block that is lifted admits the address again, at once.
func TestFirewallLiftedBlock(t *testing.T) {
	r := startFirewallRig(t, fwRigOptions{rules: &firewall.Rules{BlockedIPs: []string{"127.0.0.3", "127.0.0.5"}}})
	connectedAt := r.hub.Status().ConnectedEdges[0].ConnectedAt
	refuseFrom(t, "127.0.0.3", r.addr)
	refuseFrom(t, "127.0.0.5", r.addr)

	r.setRules(t, &firewall.Rules{BlockedIPs: []string{"127.0.0.5"}})
	echoFrom(t, "127.0.0.3", r.addr, "a rule less")
	refuseFrom(t, "127.0.0.5", r.addr)

	r.setRules(t, nil)
	echoFrom(t, "127.0.0.3", r.addr, "no firewall")
	echoFrom(t, "127.0.0.5", r.addr, "no firewall either")
	r.wantCounts(t, 3, []string{"127.0.0.3", "127.0.0.3", "127.0.0.5"})
	r.noReconnect(t, connectedAt)
}

// An entry with a firewall and no ports leaves the edge on its own ports,
// and the firewall is enforced on them.
func TestFirewallWithoutPorts(t *testing.T) {
	r := startFirewallRig(t, fwRigOptions{own: true, rules: &firewall.Rules{BlockedIPs: []string{"127.0.0.3"}}})
	if st := r.edge.Status(); !cmp.Equal(st.ListenPorts, []int{r.port}) || len(st.ListenPortsUDP) != 0 {
		t.Fatalf("the edge listens on %v / %v, want its own %v", st.ListenPorts, st.ListenPortsUDP, []int{r.port})
	}
	r.hubSees(t, []int{r.port}, []int{})
	refuseFrom(t, "127.0.0.3", r.addr)
	echoFrom(t, "127.0.0.4", r.addr, "own port")
	r.wantCounts(t, 1, []string{"127.0.0.4"})
}

var summaryCount = regexp.MustCompile(`msg="(\d+) more clients refused by the firewall".* count=(\d+)`)

// The refusals of a flood are logged a few lines a second, the rest summed
// up; every refusal is in a line or a summary.
func TestFirewallRefusalLogsRateLimited(t *testing.T) {
	const flood = 200
	r := startFirewallRig(t, fwRigOptions{rules: &firewall.Rules{BlockedIPs: []string{"127.0.0.3"}}})
	start := time.Now()
	for range flood {
		refuseFrom(t, "127.0.0.3", r.addr)
	}
	elapsed := time.Since(start)
	if got := r.refused(t); got != flood {
		t.Fatalf("firewallRefused = %d, want %d", got, flood)
	}
	r.edge.Close() // writes the summary still due
	logs := r.edgeLogs.String()
	lines := strings.Count(logs, `msg="client refused by the firewall"`)
	summed := 0
	for _, m := range summaryCount.FindAllStringSubmatch(logs, -1) {
		if m[1] != m[2] {
			t.Fatalf("summary says %s, count=%s", m[1], m[2])
		}
		n, _ := strconv.Atoi(m[2])
		summed += n
	}
	// At most a burst per window the flood touched.
	bound := ratelog.DefaultBurst * (int(elapsed/ratelog.DefaultInterval) + 2)
	t.Logf("%d refusals in %s: %d lines, %d summed up", flood, elapsed.Round(time.Millisecond), lines, summed)
	if lines > bound || lines >= flood/2 {
		t.Fatalf("%d refusal lines for %d refusals in %s, want at most %d", lines, flood, elapsed, bound)
	}
	if summed == 0 || lines+summed != flood {
		t.Fatalf("%d lines and %d summed up, want %d in all, with a summary", lines, summed, flood)
	}
}

// The edge's secret appears in no log line of either side and in no error
// about the firewall, even with rules that are refused.
func TestFirewallKeepsSecretOut(t *testing.T) {
	r := startFirewallRig(t, fwRigOptions{rules: &firewall.Rules{BlockedIPs: []string{"127.0.0.3"}, MaxConnectionsPerIP: 1}})
	refuseFrom(t, "127.0.0.3", r.addr)
	open := echoFrom(t, "127.0.0.4", r.addr, "one")
	refuseFrom(t, "127.0.0.4", r.addr)
	r.setRules(t, &firewall.Rules{BlockedIPs: []string{"127.0.0.4"}})
	expectEnded(t, open, "the connection of the newly blocked client")

	bad := []EdgeCredential{{ID: fwEdgeID, Secret: fwSecret, Ports: r.ports,
		Firewall: &firewall.Rules{BlockedIPs: []string{"127.0.0.3", "not-an-ip"}, ConnectionRatePerIP: -1}}}
	var errs []error
	errs = append(errs, r.hub.SetAllowedEdges(bad), ValidateEdgeList(bad))
	if h, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Logger: fwLogger(r.hubLogs, "hub2")}, bad); err != nil {
		errs = append(errs, err)
	} else {
		h.Close()
		t.Fatal("StartHub took a bad firewall")
	}
	for _, err := range errs {
		if err == nil {
			t.Fatal("a bad firewall was taken")
		}
		if strings.Contains(err.Error(), fwSecret) || strings.Contains(fmt.Sprintf("%+v", err), fwSecret) {
			t.Fatalf("error shows the secret: %v", err)
		}
	}
	if _, err := parseAssign(encodeAssign(assignFor(bad[0]), 9)); err == nil || strings.Contains(err.Error(), fwSecret) {
		t.Fatalf("parseAssign of a bad firewall: %v", err)
	}
	r.edge.Close()
	r.hub.Close()
	for _, side := range []struct {
		name, logs string
		sure       string // a line it surely logged: the test looks at the right output
	}{
		{"edge", r.edgeLogs.String(), "client refused by the firewall"},
		{"hub", r.hubLogs.String(), "edge connected"},
	} {
		if !strings.Contains(side.logs, side.sure) {
			t.Fatalf("the %s did not log %q; the test looks at the wrong output:\n%s", side.name, side.sure, side.logs)
		}
		if strings.Contains(side.logs, fwSecret) {
			t.Fatalf("the %s's logs show the secret:\n%s", side.name, side.logs)
		}
	}
}

// addrOf is the client IP of a TCP or UDP address, IPv4-mapped ones
// unmapped; of another net.Addr, what its string holds; invalid when it
// holds none.
func TestAddrOf(t *testing.T) {
	mapped := net.ParseIP("::ffff:203.0.113.7")
	for _, tc := range []struct {
		name string
		a    net.Addr
		want string
	}{
		{"TCP IPv4", &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7).To4(), Port: 80}, "203.0.113.7"},
		{"TCP IPv4 in 16 bytes", &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 80}, "203.0.113.7"},
		{"TCP mapped", &net.TCPAddr{IP: mapped, Port: 80}, "203.0.113.7"},
		{"TCP IPv6", &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 80}, "2001:db8::1"},
		{"TCP IPv6 loopback", &net.TCPAddr{IP: net.IPv6loopback, Port: 80}, "::1"},
		{"UDP IPv4", &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1).To4(), Port: 53}, "198.51.100.1"},
		{"UDP mapped", &net.UDPAddr{IP: mapped, Port: 53}, "203.0.113.7"},
		{"UDP IPv6", &net.UDPAddr{IP: net.ParseIP("2001:db8::53"), Port: 53}, "2001:db8::53"},
		{"other, mapped", stringAddr("[::ffff:192.0.2.1]:443"), "192.0.2.1"},
		{"other, IPv6", stringAddr("[2001:db8::2]:443"), "2001:db8::2"},
		{"other, no IP", &net.UnixAddr{Name: "/run/sock", Net: "unix"}, "invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := addrOf(tc.a)
			if got.String() != tc.want {
				t.Fatalf("addrOf(%v) = %s, want %s", tc.a, got, tc.want)
			}
			if got.Is4In6() {
				t.Fatalf("addrOf(%v) = %s is still mapped", tc.a, got)
			}
		})
	}
}

// stringAddr is a net.Addr that is only its string.
type stringAddr string

func (a stringAddr) Network() string { return "test" }
func (a stringAddr) String() string  { return string(a) }

// abortRecorder records the reasons an edgeClient's stream is aborted with.
type abortRecorder struct {
	mu      sync.Mutex
	reasons []string
}

func (a *abortRecorder) abort(reason string) {
	a.mu.Lock()
	a.reasons = append(a.reasons, reason)
	a.mu.Unlock()
}

func (a *abortRecorder) got() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.reasons)
}

// A block before the stream is opened aborts it as soon as it is; a block
// after aborts it at once; a client never blocked is never aborted.
func TestEdgeClientBlock(t *testing.T) {
	t.Run("before opened", func(t *testing.T) {
		var c edgeClient
		var rec abortRecorder
		c.block()
		if c.opened(rec.abort) {
			t.Fatal("opened = true after a block")
		}
		if diff := cmp.Diff([]string{blockedReason}, rec.got()); diff != "" {
			t.Fatalf("aborts (-want +got):\n%s", diff)
		}
	})
	t.Run("after opened", func(t *testing.T) {
		var c edgeClient
		var rec abortRecorder
		if !c.opened(rec.abort) {
			t.Fatal("opened = false without a block")
		}
		if got := rec.got(); len(got) != 0 {
			t.Fatalf("aborted before any block: %v", got)
		}
		c.block()
		if diff := cmp.Diff([]string{blockedReason}, rec.got()); diff != "" {
			t.Fatalf("aborts (-want +got):\n%s", diff)
		}
	})
	t.Run("never blocked", func(t *testing.T) {
		var c edgeClient
		var rec abortRecorder
		if !c.opened(rec.abort) {
			t.Fatal("opened = false without a block")
		}
		if got := rec.got(); len(got) != 0 {
			t.Fatalf("aborted without a block: %v", got)
		}
	})
	t.Run("racing", func(t *testing.T) {
		// Whichever comes first, the stream is aborted.
		for range 200 {
			var c edgeClient
			var rec abortRecorder
			done := make(chan struct{})
			go func() {
				defer close(done)
				c.block()
			}()
			c.opened(rec.abort)
			<-done
			if got := rec.got(); len(got) == 0 {
				t.Fatal("a block racing the open did not abort the stream")
			}
		}
	})
}

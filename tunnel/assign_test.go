package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// assignRig is a hub that assigns an edge its ports, the edge, and an echo
// target on 127.0.0.2 behind every port a test uses.
type assignRig struct {
	hub       *Hub
	edge      *Edge
	hubEvents *eventLog
	edgeEvts  *eventLog
	hubPort   int
}

const assignEdgeID, assignSecret = "edge-a", "s3cret-a"

// assignPorts returns n TCP ports free on the edge's and the target's host,
// each with an echo target behind it.
func assignPorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = testutil.FreePort(t, "127.0.0.1", "127.0.0.2")
		startTargetAt(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(ports[i])), echoHandler)
	}
	return ports
}

// startAssignHub starts a hub on port (0: any) allowing assignEdgeID with ports.
func startAssignHub(t *testing.T, r *assignRig, port int, ports *PortAssignment) {
	t.Helper()
	var err error
	r.hub, err = StartHub(HubConfig{ListenHost: "127.0.0.1", TunnelPort: port, TargetHost: "127.0.0.2",
		Logger: testLogger(t).With("t", "hub"), Events: r.hubEvents.sink},
		[]EdgeCredential{{ID: assignEdgeID, Secret: assignSecret, Ports: ports}})
	if err != nil {
		t.Fatalf("StartHub: %v", err)
	}
	t.Cleanup(func() { r.hub.Close() })
	r.hubPort = r.hub.Port()
}

// startAssignRig starts the hub and an edge with own ports of its own
// (maybe none), over transport tr[0] (TLS without).
func startAssignRig(t *testing.T, ports *PortAssignment, own []int, tr ...string) *assignRig {
	t.Helper()
	transport := TransportTLS
	if len(tr) > 0 {
		transport = tr[0]
	}
	r := &assignRig{hubEvents: newEventLog(), edgeEvts: newEventLog()}
	startAssignHub(t, r, 0, ports)
	var err error
	r.edge, err = StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: r.hubPort, EdgeID: assignEdgeID, Secret: assignSecret,
		ListenHost: "127.0.0.1", ListenPorts: own, StunInterval: -1, FirewallBackend: FirewallProcess,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, Transport: transport,
		Logger: testLogger(t).With("t", "edge"), Events: r.edgeEvts.sink})
	if err != nil {
		t.Fatalf("StartEdge: %v", err)
	}
	t.Cleanup(func() { r.edge.Close() })
	r.edgeEvts.wait(t, 0, 10*time.Second, named(EventTunnelConnected))
	return r
}

func (r *assignRig) assign(t *testing.T, ports *PortAssignment) {
	t.Helper()
	if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: assignEdgeID, Secret: assignSecret, Ports: ports}}); err != nil {
		t.Fatal(err)
	}
}

// waitAssigned waits for the portsAssigned event after index from that
// carries tcp and udp, and returns its index.
func (r *assignRig) waitAssigned(t *testing.T, from int, tcp, udp []int) int {
	t.Helper()
	_, i := r.edgeEvts.wait(t, from, 5*time.Second, func(ev Event) bool {
		d, ok := ev.Data.(PortsAssignedEvent)
		return ok && cmp.Equal(d, PortsAssignedEvent{ListenPorts: tcp, ListenPortsUDP: udp})
	})
	return i
}

// hubSees waits until the hub reports the edge's bound ports as tcp and udp.
func (r *assignRig) hubSees(t *testing.T, tcp, udp []int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("the hub to report %v/%v bound", tcp, udp), func() bool {
		st := r.hub.Status()
		return len(st.ConnectedEdges) == 1 && cmp.Equal(st.ConnectedEdges[0].ListenPorts, tcp) && cmp.Equal(st.ConnectedEdges[0].ListenPortsUDP, udp)
	})
}

// echoVia opens a connection to the edge's port, checks an echo of msg and
// the PROXY header's destination port at the target, and leaves it open.
func echoVia(t *testing.T, port int, msg string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("dial edge port %d: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo via port %d = %q, %v", port, got, err)
	}
	c.SetReadDeadline(time.Time{})
	return c.(*net.TCPConn)
}

func TestAssignedPortsOnConnect(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		ports := assignPorts(t, 2)
		r := startAssignRig(t, &PortAssignment{TCP: ports, UDP: []int{}}, nil, tr)
		r.waitAssigned(t, 0, ports, []int{})
		if st := r.edge.Status(); !cmp.Equal(st.ListenPorts, sortedInts(ports)) || len(st.ListenPortsUDP) != 0 {
			t.Fatalf("edge status ports = %v / %v, want %v", st.ListenPorts, st.ListenPortsUDP, ports)
		}
		r.hubSees(t, sortedInts(ports), []int{})
		for _, p := range ports {
			echoVia(t, p, "hello "+strconv.Itoa(p))
		}
	})
}

// The edge binds its ports before its tunnel counts as up: the first
// assignment is part of the handshake, so no client is turned away for
// want of a port once tunnelConnected is out.
func TestFirstAssignmentBeforeTunnelConnected(t *testing.T) {
	ports := assignPorts(t, 1)
	r := startAssignRig(t, &PortAssignment{TCP: ports}, nil)
	evs := r.edgeEvts.snapshot()
	assigned, connected := -1, -1
	for i, ev := range evs {
		switch ev.Name {
		case EventPortsAssigned:
			assigned = i
		case EventTunnelConnected:
			connected = i
		}
	}
	if assigned < 0 || assigned > connected {
		t.Fatalf("portsAssigned (%d) must come before tunnelConnected (%d): %v", assigned, connected, evs)
	}
}

// A change of the assignment while traffic flows: the added port accepts
// within 2 s, the removed one stops accepting while its open connection
// finishes, the unchanged one carries a long transfer without a break, and
// the tunnel is never reconnected.
func TestAssignmentHotReload(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		ports := assignPorts(t, 3)
		keep, drop, add := ports[0], ports[1], ports[2]
		r := startAssignRig(t, &PortAssignment{TCP: []int{keep, drop}}, nil, tr)
		r.waitAssigned(t, 0, []int{keep, drop}, []int{})
		connectedAt := r.hub.Status().ConnectedEdges[0].ConnectedAt

		// A long transfer on the port that stays.
		long := echoVia(t, keep, "start")
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var maxGap time.Duration
		var transferErr error
		var sent, received bytes.Buffer
		wg.Add(2)
		go func() {
			defer wg.Done()
			chunk := make([]byte, 4096)
			for {
				select {
				case <-stop:
					long.CloseWrite()
					return
				default:
				}
				rand.Read(chunk)
				sent.Write(chunk)
				if _, err := long.Write(chunk); err != nil {
					transferErr = err
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			last := time.Now()
			for {
				n, err := long.Read(buf)
				if n > 0 {
					received.Write(buf[:n])
					maxGap = max(maxGap, time.Since(last))
					last = time.Now()
				}
				if err != nil {
					return
				}
			}
		}()
		open := echoVia(t, drop, "on the port to go")

		from := len(r.edgeEvts.snapshot())
		start := time.Now()
		r.assign(t, &PortAssignment{TCP: []int{keep, add}})
		testutil.Eventually(t, 2*time.Second, "the added port to accept", func() bool {
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(add)))
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		t.Logf("added port accepting %s after SetAllowedEdges", time.Since(start).Round(time.Millisecond))
		r.waitAssigned(t, from, []int{keep, add}, []int{})
		if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(drop))); err == nil {
			c.Close()
			t.Fatal("the removed port still accepts")
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial removed port: %v", err)
		}
		echoVia(t, add, "on the new port")
		finishEcho(t, open, "", " still flows")
		r.hubSees(t, sortedInts([]int{keep, add}), []int{})

		time.Sleep(200 * time.Millisecond) // the transfer runs on after the change
		close(stop)
		wg.Wait()
		if transferErr != nil {
			t.Fatalf("long transfer: %v", transferErr)
		}
		if !bytes.Equal(received.Bytes(), sent.Bytes()) {
			t.Fatalf("long transfer corrupted: sent %d bytes, got %d back", sent.Len(), received.Len())
		}
		if maxGap > 2*time.Second {
			t.Fatalf("the transfer on the unchanged port paused for %s", maxGap)
		}
		for _, ev := range r.edgeEvts.snapshot() {
			if ev.Name == EventTunnelDisconnected {
				t.Fatalf("the tunnel reconnected: %+v", ev)
			}
		}
		if st := r.hub.Status(); len(st.ConnectedEdges) != 1 || st.ConnectedEdges[0].ConnectedAt != connectedAt {
			t.Fatalf("the hub's tunnel changed: %+v", st.ConnectedEdges)
		}
	})
}

// The edge keeps its assignment while the hub is away, and takes the new
// hub's at the next connection.
func TestAssignmentKeptAcrossHubRestart(t *testing.T) {
	ports := assignPorts(t, 2)
	hubPort := testutil.FreePort(t, "127.0.0.1")
	r := &assignRig{hubEvents: newEventLog(), edgeEvts: newEventLog()}
	startAssignHub(t, r, hubPort, &PortAssignment{TCP: ports[:1]})
	var err error
	r.edge, err = StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hubPort, EdgeID: assignEdgeID, Secret: assignSecret,
		ListenHost: "127.0.0.1", StunInterval: -1, FirewallBackend: FirewallProcess,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Logger: testLogger(t).With("t", "edge"), Events: r.edgeEvts.sink})
	if err != nil {
		t.Fatal(err)
	}
	defer r.edge.Close()
	r.waitAssigned(t, 0, ports[:1], []int{})
	r.hub.Close()
	_, down := r.edgeEvts.wait(t, 0, 5*time.Second, named(EventTunnelDisconnected))
	if st := r.edge.Status(); !cmp.Equal(st.ListenPorts, ports[:1]) {
		t.Fatalf("while the hub is away the edge listens on %v, want %v", st.ListenPorts, ports[:1])
	}
	startAssignHub(t, r, hubPort, &PortAssignment{TCP: ports[1:]})
	r.waitAssigned(t, down, ports[1:], []int{})
	if st := r.edge.Status(); !cmp.Equal(st.ListenPorts, ports[1:]) {
		t.Fatalf("after the new hub's assignment the edge listens on %v, want %v", st.ListenPorts, ports[1:])
	}
	echoVia(t, ports[1], "through the new hub")
}

// A port the edge cannot bind is reported; the others work.
func TestUnbindablePortReported(t *testing.T) {
	ports := assignPorts(t, 1)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	r := startAssignRig(t, &PortAssignment{TCP: []int{busyPort, ports[0]}}, nil)
	ev, _ := r.edgeEvts.wait(t, 0, 5*time.Second, named(EventPortError))
	pe := ev.Data.(PortErrorEvent)
	if pe.Port != busyPort || pe.Protocol != "tcp" || !strings.Contains(pe.Error, strconv.Itoa(busyPort)) {
		t.Fatalf("portError = %+v", pe)
	}
	r.waitAssigned(t, 0, []int{busyPort, ports[0]}, []int{})
	if st := r.edge.Status(); !cmp.Equal(st.ListenPorts, ports) {
		t.Fatalf("bound ports = %v, want %v", st.ListenPorts, ports)
	}
	r.hubSees(t, ports, []int{})
	echoVia(t, ports[0], "the other port works")
	if m := r.edge.Metrics(); m.Ready {
		t.Fatal("ready with an assigned port unbound")
	}
}

// UDP ports of the assignment are bound and reported, and let go when
// they leave it.
func TestAssignedUDPPortsBound(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		udp := testutil.FreeUDPPort(t, "127.0.0.1")
		r := startAssignRig(t, &PortAssignment{UDP: []int{udp}}, nil, tr)
		r.waitAssigned(t, 0, []int{}, []int{udp})
		if st := r.edge.Status(); !cmp.Equal(st.ListenPortsUDP, []int{udp}) || len(st.ListenPorts) != 0 {
			t.Fatalf("edge status = %v / %v", st.ListenPorts, st.ListenPortsUDP)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(udp))
		if pc, err := net.ListenPacket("udp", addr); err == nil {
			pc.Close()
			t.Fatal("the assigned UDP port is not bound")
		}
		r.hubSees(t, []int{}, []int{udp})
		r.assign(t, &PortAssignment{})
		testutil.Eventually(t, 2*time.Second, "the UDP port to be let go", func() bool {
			pc, err := net.ListenPacket("udp", addr)
			if err == nil {
				pc.Close()
			}
			return err == nil
		})
	})
}

// An entry without ports gives the edge back its own.
func TestAssignmentRevertsToOwnPorts(t *testing.T) {
	ports := assignPorts(t, 2)
	own, assigned := ports[:1], ports[1:]
	r := startAssignRig(t, &PortAssignment{TCP: assigned}, own)
	r.waitAssigned(t, 0, assigned, []int{})
	if st := r.edge.Status(); !cmp.Equal(st.ListenPorts, assigned) {
		t.Fatalf("ports = %v, want the assigned %v", st.ListenPorts, assigned)
	}
	from := len(r.edgeEvts.snapshot())
	r.assign(t, nil)
	r.waitAssigned(t, from, own, []int{})
	if st := r.edge.Status(); !cmp.Equal(st.ListenPorts, own) {
		t.Fatalf("ports = %v, want the edge's own %v", st.ListenPorts, own)
	}
	echoVia(t, own[0], "own port again")
}

// An edge that does not announce capAssign is refused by an entry that
// assigns, and let in by one that does not; a connected one is
// disconnected when its entry starts to assign.
func TestEdgeWithoutAssignCapability(t *testing.T) {
	r := &assignRig{hubEvents: newEventLog(), edgeEvts: newEventLog()}
	startAssignHub(t, r, 0, &PortAssignment{TCP: []int{}})
	oldEdge := func() *tls.Conn { return rawEdgeCaps(t, r.hubPort, assignEdgeID, assignSecret, ourCaps&^capAssign) }
	c := oldEdge()
	h, p, err := newFrameReader(c).ReadFrame()
	if err != nil || h.Type != frameGoAway || !strings.Contains(string(p), "upgrade the edge") {
		t.Fatalf("after AUTH_OK: %s %q %v, want GOAWAY telling to upgrade", h.Type, p, err)
	}
	if n := len(r.hub.Status().ConnectedEdges); n != 0 {
		t.Fatalf("%d edges connected", n)
	}

	r.assign(t, nil)
	c = oldEdge()
	testutil.Eventually(t, 5*time.Second, "the old edge to be connected", func() bool { return len(r.hub.Status().ConnectedEdges) == 1 })
	r.assign(t, &PortAssignment{TCP: []int{}})
	if reason := goAwayReason(t, c, frameAssign); !strings.Contains(reason, "upgrade the edge") {
		t.Fatalf("GOAWAY %q", reason)
	}
}

// goAwayReason reads frames from c until a GOAWAY and returns its reason;
// a frame of type forbidden (if not 0) before it fails the test.
func goAwayReason(t *testing.T, c net.Conn, forbidden frameType) string {
	t.Helper()
	fr := newFrameReader(c)
	for {
		h, p, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for GOAWAY: %v", err)
		}
		switch {
		case h.Type == frameGoAway:
			return string(p)
		case forbidden != 0 && h.Type == forbidden:
			t.Fatalf("%s before GOAWAY", h.Type)
		}
	}
}

// The wire checks of ASSIGN and BOUND: one way each, well-formed, or the
// tunnel ends as a protocol error (and only that tunnel).
func TestMalformedBoundIsProtocolError(t *testing.T) {
	r := &assignRig{hubEvents: newEventLog(), edgeEvts: newEventLog()}
	startAssignHub(t, r, 0, nil)
	for _, tc := range []struct {
		name string
		t    frameType
		p    string
		want string
	}{
		{"port 0", frameBound, `{"seq":1,"tcp":[0],"udp":[]}`, "malformed BOUND"},
		{"duplicate", frameBound, `{"seq":1,"tcp":[80,80],"udp":[]}`, "malformed BOUND"},
		{"not JSON", frameBound, `garbage`, "malformed BOUND"},
		{"ASSIGN to the hub", frameAssign, `{"seq":1}`, "unexpected ASSIGN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.hubPort)), edgeTLSConfig("127.0.0.1"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A set of its own: the previous case's tunnel may not have left its place yet.
			if _, err := edgeHandshake(c, assignEdgeID, assignSecret, DefaultWindow, setPlace{ID: newSetID(), Size: 1}, ourCaps); err != nil {
				t.Fatal(err)
			}
			if _, err := readFirstAssign(c); err != nil {
				t.Fatalf("first ASSIGN: %v", err)
			}
			if err := newFrameWriter(c).WriteFrame(0, tc.t, []byte(tc.p)); err != nil {
				t.Fatal(err)
			}
			if reason := goAwayReason(t, c, 0); !strings.Contains(reason, tc.want) {
				t.Fatalf("GOAWAY %q, want %q", reason, tc.want)
			}
		})
	}
}

func TestParseAssign(t *testing.T) {
	good := `{"seq":7,"ports":{"tcp":[443,80],"udp":[53]},"firewall":{"blockedIps":["10.0.0.0/8"],"maxConnectionsPerIp":3},"later":"ignored"}`
	m, err := parseAssign([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if m.Seq != 7 || !cmp.Equal(*m.Ports, portLists{TCP: []int{443, 80}, UDP: []int{53}}) ||
		m.Firewall == nil || m.Firewall.MaxConnectionsPerIP != 3 || !cmp.Equal(m.Firewall.BlockedIPs, []string{"10.0.0.0/8"}) {
		t.Fatalf("parsed %+v", m)
	}
	// What the hub encodes, the edge parses back.
	again, err := parseAssign(encodeAssign(m, m.Seq))
	if err != nil || !sameAssign(again, m) {
		t.Fatalf("round trip: %+v, %v", again, err)
	}
	for _, bad := range []string{
		``, `[]`, `null`, `{"seq":-1}`, `{"seq":1} {}`, `{"ports":{"tcp":[0]}}`, `{"ports":{"tcp":[65536]}}`,
		`{"ports":{"udp":[9,9]}}`, `{"ports":{"tcp":"80"}}`, `{"firewall":{"blockedIps":["nope"]}}`,
		`{"firewall":{"connectionRatePerIp":-2}}`,
	} {
		if _, err := parseAssign([]byte(bad)); err == nil || !strings.Contains(err.Error(), "malformed ASSIGN") {
			t.Errorf("parseAssign(%q) = %v, want malformed ASSIGN", bad, err)
		}
	}
}

// FuzzParseAssign: whatever arrives, parseAssign returns an error or an
// assignment that survives encoding and parsing again unchanged.
func FuzzParseAssign(f *testing.F) {
	f.Add([]byte(`{"seq":1,"ports":{"tcp":[80],"udp":[]}}`))
	f.Add([]byte(`{"seq":2,"firewall":{"blockedIps":["::ffff:10.0.0.0/104"],"allowedIps":["2001:db8::/32"]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := parseAssign(p)
		if err != nil {
			return
		}
		again, err := parseAssign(encodeAssign(m, m.Seq))
		if err != nil || !sameAssign(again, m) || again.Seq != m.Seq {
			t.Fatalf("%q parsed to %+v, which round-trips to %+v, %v", p, m, again, err)
		}
	})
}

// FuzzParseBound: likewise for BOUND, whose lists are always non-nil.
func FuzzParseBound(f *testing.F) {
	f.Add([]byte(`{"seq":1,"tcp":[80,443],"udp":[53]}`))
	f.Add([]byte(`{"seq":0}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := parseBound(p)
		if err != nil {
			return
		}
		if m.TCP == nil || m.UDP == nil {
			t.Fatalf("%q: nil lists", p)
		}
		again, err := parseBound(encodeBound(m))
		if err != nil || !cmp.Equal(again, m, cmp.AllowUnexported(boundMsg{})) {
			t.Fatalf("%q parsed to %+v, which round-trips to %+v, %v", p, m, again, err)
		}
	})
}

func sortedInts(in []int) []int {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}

// Close at any moment of a connection, the first assignment's included,
// returns: a tunnel that comes up as the edge closes is closed too.
func TestCloseWhileConnecting(t *testing.T) {
	r := &assignRig{hubEvents: newEventLog(), edgeEvts: newEventLog()}
	startAssignHub(t, r, 0, &PortAssignment{TCP: []int{}})
	for i := 0; i < 60; i++ {
		e, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: r.hubPort, EdgeID: assignEdgeID, Secret: assignSecret,
			ListenHost: "127.0.0.1", StunInterval: -1, FirewallBackend: FirewallProcess, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%20) * 250 * time.Microsecond)
		done := make(chan struct{})
		go func() {
			e.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Close did not return", i)
		}
	}
}

// BOUND from an edge that did not announce capAssign is a protocol error.
func TestBoundWithoutCapabilityIsProtocolError(t *testing.T) {
	r := &assignRig{hubEvents: newEventLog(), edgeEvts: newEventLog()}
	startAssignHub(t, r, 0, nil)
	c := rawEdgeCaps(t, r.hubPort, assignEdgeID, assignSecret, ourCaps&^capAssign)
	if err := newFrameWriter(c).WriteFrame(0, frameBound, encodeBound(boundMsg{})); err != nil {
		t.Fatal(err)
	}
	if reason := goAwayReason(t, c, 0); !strings.Contains(reason, "unexpected BOUND") {
		t.Fatalf("GOAWAY %q", reason)
	}
}

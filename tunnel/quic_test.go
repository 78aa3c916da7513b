package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// The edge's status, its tunnelConnected event and the hub's entry name
// the transport the tunnel runs on.
func TestTransportIsReported(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr})
		ev, _ := r.edgeEvts.wait(t, 0, 0, named(EventTunnelConnected))
		if got := ev.Data.(TunnelConnectedEvent).Transport; got != tr {
			t.Fatalf("tunnelConnected transport %q, want %q", got, tr)
		}
		st := r.edge.Status()
		if st.Transport == nil || *st.Transport != tr {
			t.Fatalf("edge status transport %v, want %q", st.Transport, tr)
		}
		if st.Hubs[0].Transport == nil || *st.Hubs[0].Transport != tr {
			t.Fatalf("edge hubs[0] transport %v, want %q", st.Hubs[0].Transport, tr)
		}
		hs := r.hub.Status()
		if len(hs.ConnectedEdges) != 1 || hs.ConnectedEdges[0].Transport != tr {
			t.Fatalf("hub connectedEdges %+v, want one on %q", hs.ConnectedEdges, tr)
		}
		if hs.QUICPort != r.hub.Port() {
			t.Fatalf("quicPort %d, want the tunnel port %d", hs.QUICPort, r.hub.Port())
		}
		c := r.dial(t)
		c.Write([]byte("ping"))
		c.CloseWrite()
		got, _ := io.ReadAll(c)
		if string(got) != "ping" {
			t.Fatalf("echo %q", got)
		}
	})
}

// A hub without QUIC: an edge on "auto" is up over TLS within
// QUICFallback and a second; the hub comes back with QUIC on the same port
// and the edge's next tunnel is QUIC again.
func TestAutoFallsBackToTLSAndReturnsToQUIC(t *testing.T) {
	tg := startTarget(t, echoHandler)
	events := newEventLog()
	creds := []EdgeCredential{{ID: "edge-1", Secret: "s3cret"}}
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", DisableQUIC: true, Logger: testLogger(t)}, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { hub.Close() }()
	if hub.QUICPort() != 0 || hub.Status().QUICPort != 0 {
		t.Fatalf("quicPort %d with QUIC off", hub.QUICPort())
	}
	const fallback = 300 * time.Millisecond
	start := time.Now()
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hub.Port(), EdgeID: "edge-1", Secret: "s3cret",
		ListenHost: "127.0.0.1", ListenPorts: []int{tg.port}, StunInterval: -1, Transport: TransportAuto, QUICFallback: fallback,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, Logger: testLogger(t), Events: events.sink})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	ev, idx := events.wait(t, 0, fallback+time.Second, named(EventTunnelConnected))
	if tr := ev.Data.(TunnelConnectedEvent).Transport; tr != TransportTLS {
		t.Fatalf("without QUIC at the hub the edge came up on %q", tr)
	}
	t.Logf("up on TLS %v after start (fallback %v)", time.Since(start).Round(time.Millisecond), fallback)
	echoOnce(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tg.port)), "over tls")

	port := hub.Port()
	hub.Close()
	hub, err = StartHub(HubConfig{ListenHost: "127.0.0.1", TunnelPort: port, TargetHost: "127.0.0.2", Logger: testLogger(t)}, creds)
	if err != nil {
		t.Fatal(err)
	}
	if hub.QUICPort() != port {
		t.Fatalf("quicPort %d, want %d", hub.QUICPort(), port)
	}
	ev, _ = events.wait(t, idx+1, 10*time.Second, named(EventTunnelConnected))
	if tr := ev.Data.(TunnelConnectedEvent).Transport; tr != TransportQUIC {
		t.Fatalf("after the hub got QUIC the edge reconnected on %q", tr)
	}
	if st := edge.Status(); st.Transport == nil || *st.Transport != TransportQUIC {
		t.Fatalf("edge status transport %v", st.Transport)
	}
	echoOnce(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tg.port)), "over quic")
}

// echoOnce sends msg through addr to an echo target and checks the echo.
func echoOnce(t *testing.T, addr, msg string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(msg))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// An edge on "quic" against a hub without QUIC does not connect, and says
// why; it does not fall back.
func TestQUICEdgeAgainstHubWithoutQUIC(t *testing.T) {
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", DisableQUIC: true, Logger: testLogger(t)},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	events := newEventLog()
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hub.Port(), EdgeID: "edge-1", Secret: "s3cret",
		ListenHost: "127.0.0.1", ListenPorts: []int{testutil.FreePort(t, "127.0.0.1", "127.0.0.2")}, StunInterval: -1,
		Transport: TransportQUIC, Tuning: Tuning{HandshakeTimeout: 500 * time.Millisecond}, Logger: testLogger(t), Events: events.sink})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	ev, _ := events.wait(t, 0, 5*time.Second, func(e Event) bool {
		return e.Name == EventTunnelConnected || e.Name == EventTunnelDisconnected
	})
	if ev.Name != EventTunnelDisconnected || !strings.Contains(ev.Data.(TunnelDisconnectedEvent).Reason, "QUIC") {
		t.Fatalf("got %s %+v, want a disconnect naming QUIC", ev.Name, ev.Data)
	}
	if st := edge.Status(); st.Connected || st.Transport != nil || !strings.Contains(st.LastError, "QUIC") {
		t.Fatalf("status %+v", st)
	}
}

// A man in the middle with its own certificate that terminates QUIC from
// the edge and relays the control stream to the real hub over QUIC of its
// own gets neither side to accept: the proofs are bound to each QUIC
// connection's exporter.
func TestQUICManInTheMiddleRelayIsRefused(t *testing.T) {
	r := startRig(t, rigOptions{transport: TransportQUIC})
	hubAddr, _ := net.ResolveUDPAddr("udp", fmt.Sprintf("127.0.0.1:%d", r.hub.QUICPort()))
	cert, _ := hubCertificate("", "")
	ln, err := quic.ListenAddr("127.0.0.1:0", quicTLSConfig(hubTLSConfig(cert)), quicConfig(DefaultTuning(), true))
	if err != nil {
		t.Fatal(err)
	}
	var rec edgeRecorder
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); ln.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			ec, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer ec.CloseWithError(0, "")
				es, err := ec.AcceptStream(ctx)
				if err != nil {
					return
				}
				hc, err := quic.DialAddr(ctx, hubAddr.String(), quicTLSConfig(edgeTLSConfig("127.0.0.1")), quicConfig(DefaultTuning(), false))
				if err != nil {
					return
				}
				defer hc.CloseWithError(0, "")
				hs, err := hc.OpenStreamSync(ctx)
				if err != nil {
					return
				}
				go func() {
					io.Copy(es, hs)
					// Relay the hub's close too, reason and all.
					var ae *quic.ApplicationError
					if errors.As(context.Cause(hc.Context()), &ae) {
						ec.CloseWithError(ae.ErrorCode, ae.ErrorMessage)
					}
					es.Close()
				}()
				rec.relay(hs, es)
				hs.Close()
				<-hc.Context().Done()
			}()
		}
	}()
	ev := tryEdge(t, ln.Addr().(*net.UDPAddr).Port, EdgeConfig{Secret: r.secret, Transport: TransportQUIC})
	if ev.Name != EventTunnelDisconnected || !strings.Contains(ev.Data.(TunnelDisconnectedEvent).Reason, "authentication failed") {
		t.Fatalf("through the relay: %s %+v", ev.Name, ev.Data)
	}
	rec.check(t)
	if n := countEvents(r.hubEvents, EventEdgeConnected); n != 1 {
		t.Fatalf("the hub accepted %d tunnels, want only the genuine one", n)
	}
}

// deafConn is a PacketConn that sends but never receives: a QUIC client on
// it leaves the hub with a handshake that never completes.
type deafConn struct {
	net.PacketConn
	closed chan struct{}
}

func (d *deafConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-d.closed
	return 0, nil, net.ErrClosed
}

func (d *deafConn) Close() error {
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	return d.PacketConn.Close()
}

// A flood of half-done QUIC handshakes, of QUIC connections that never
// authenticate, and of junk datagrams on the QUIC port does not keep a
// real edge out; the pending count stays within the cap and goes back to 0.
func TestQUICPreAuthFloodDoesNotLockOutEdge(t *testing.T) {
	const maxPending = 32
	events := newEventLog()
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", MaxPendingHandshakes: maxPending,
		Tuning: Tuning{HandshakeTimeout: 3 * time.Second}, Logger: testLogger(t), Events: events.sink},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	addr, _ := net.ResolveUDPAddr("udp", fmt.Sprintf("127.0.0.1:%d", hub.QUICPort()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	// Half-done handshakes: Initials whose answers are never read.
	for i := 0; i < 3*maxPending; i++ {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		d := &deafConn{PacketConn: pc, closed: make(chan struct{})}
		closers = append(closers, d)
		go quic.Dial(ctx, d, addr, quicTLSConfig(edgeTLSConfig("127.0.0.1")), quicConfig(DefaultTuning(), false))
	}
	// Completed QUIC handshakes that never open the control stream.
	for i := 0; i < 2*maxPending; i++ {
		go func() {
			qc, err := quic.DialAddr(ctx, addr.String(), quicTLSConfig(edgeTLSConfig("127.0.0.1")), quicConfig(DefaultTuning(), false))
			if err == nil {
				<-ctx.Done()
				qc.CloseWithError(0, "")
			}
		}()
	}
	// Junk.
	junk, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	closers = append(closers, junk)
	for i := 0; i < 500; i++ {
		b := make([]byte, 1200)
		rand.Read(b)
		b[0] |= 0xc0 // a long header, as an Initial has
		junk.Write(b)
	}
	// The cap holds at every moment of the flood, not only at the end.
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			if p := int64(hub.Status().PendingHandshakes); p > peak.Load() {
				peak.Store(p)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	testutil.Eventually(t, 5*time.Second, "the flood to fill the pending handshakes", func() bool {
		return hub.Status().PendingHandshakes >= maxPending/2
	})
	start := time.Now()
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hub.Port(), EdgeID: "edge-1", Secret: "s3cret",
		ListenHost: "127.0.0.1", ListenPorts: []int{testutil.FreePort(t, "127.0.0.1", "127.0.0.2")}, StunInterval: -1,
		Transport: TransportQUIC, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	events.wait(t, 0, 10*time.Second, named(EventEdgeConnected))
	t.Logf("the real edge got in %v after it started, amid the flood", time.Since(start).Round(time.Millisecond))
	cancel()
	<-sampled
	if p := peak.Load(); p > maxPending {
		t.Fatalf("%d pending handshakes at the peak of the flood, cap %d", p, maxPending)
	}
	t.Logf("pending handshakes at the peak: %d (cap %d)", peak.Load(), maxPending)
	for _, c := range closers {
		c.Close()
	}
	closers = nil
	testutil.Eventually(t, 15*time.Second, "the pending handshakes to end", func() bool { return hub.Status().PendingHandshakes == 0 })
	if st := hub.Status(); len(st.ConnectedEdges) != 1 || st.RejectedHandshakes == 0 {
		t.Fatalf("after the flood: %+v", st)
	}
}

// A client that stops reading holds at most the QUIC windows of its
// stream in the tunnel: its target is pushed back; another stream on the
// same tunnel moves 8 MiB meanwhile.
func TestQUICStalledReaderIsPushedBack(t *testing.T) {
	var pushed atomic.Int64
	stalledDone := make(chan struct{})
	tuning := Tuning{Window: 256 << 10, MaxWindow: 1 << 20, WindowBudget: 4 << 20}
	r := startRig(t, rigOptions{transport: TransportQUIC, tuning: tuning, connections: 1, handler: func(hdr string, c net.Conn, br *bufio.Reader) {
		if line, _ := br.ReadString('\n'); line == "stall\n" {
			chunk := make([]byte, 64<<10)
			for {
				c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				n, err := c.Write(chunk)
				pushed.Add(int64(n))
				if err != nil {
					close(stalledDone)
					return
				}
			}
		}
		io.Copy(c, br)
		c.(*net.TCPConn).CloseWrite()
	}})
	stalled := r.dial(t)
	stalled.SetReadBuffer(4096)
	stalled.Write([]byte("stall\n"))
	select {
	case <-stalledDone: // the target's writes stopped for 2 s: pushed back
	case <-time.After(30 * time.Second):
		t.Fatalf("the target pushed %d bytes into a stalled stream and was never pushed back", pushed.Load())
	}
	// What the target got rid of: the QUIC stream window at the edge (at
	// most MaxWindow), the hub's copy buffer, and the socket buffers of
	// target, hub and client on loopback.
	if p := pushed.Load(); p > 24<<20 {
		t.Fatalf("the target pushed %d MiB into a stalled stream", p>>20)
	}
	t.Logf("the target pushed %d KiB into the stalled stream before it was pushed back", pushed.Load()>>10)
	c := r.dial(t)
	c.Write([]byte("echo\n"))
	data := make([]byte, 8<<20)
	rand.Read(data)
	go func() { c.Write(data); c.CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("8 MiB beside the stalled stream: %d bytes, %v", len(got), err)
	}
}

// rawQUICEdge authenticates as edge-1 over a QUIC connection of its own
// and returns the connection and its control stream.
func rawQUICEdge(t *testing.T, hub *Hub, caps uint32) (*quic.Conn, *quic.Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, fmt.Sprintf("127.0.0.1:%d", hub.QUICPort()), quicTLSConfig(edgeTLSConfig("127.0.0.1")), quicConfig(DefaultTuning(), false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	ctrl, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edgeHandshake(quicHandshake{Stream: ctrl, qc: qc}, "edge-1", "s3cret", DefaultWindow, setPlace{ID: 1, Size: 1}, caps); err != nil {
		t.Fatal(err)
	}
	return qc, ctrl
}

// openRaw opens a stream that starts with payload as its OPEN frame.
func openRaw(t *testing.T, qc *quic.Conn, typ frameType, payload string) *quic.Stream {
	t.Helper()
	s, err := qc.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, headerLen, headerLen+len(payload))
	putHeader(b, frameHeader{Type: typ, Length: uint32(len(payload))})
	s.Write(append(b, payload...))
	return s
}

// Hostile input from an authenticated QUIC edge: a stream that does not
// start with a valid OPEN is reset and the tunnel serves on; a frame that
// has no place on the control stream closes that tunnel with the reason
// logged, and the hub serves the next one.
func TestQUICHostileEdge(t *testing.T) {
	tg := startTarget(t, echoHandler)
	events := newEventLog()
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Logger: testLogger(t), Events: events.sink},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	qc, ctrl := rawQUICEdge(t, hub, ourCaps&^capAssign)
	events.wait(t, 0, 5*time.Second, named(EventEdgeConnected))
	line := fmt.Sprintf("PROXY TCP4 192.0.2.1 127.0.0.1 4000 %d\r\n", tg.port)
	for _, bad := range []struct {
		typ frameType
		p   string
	}{{frameData, line}, {frameOpen, "PROXY TCP4 nonsense\r\n"}, {frameOpen, ""}} {
		s := openRaw(t, qc, bad.typ, bad.p)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(s)
		var se *quic.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("stream opened with %s %q: %v, want a reset", bad.typ, bad.p, err)
		}
	}
	s := openRaw(t, qc, frameOpen, line)
	s.Write([]byte("still served"))
	s.Close()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(s); string(got) != "still served" {
		t.Fatalf("a good stream after the bad ones: %q, %v", got, err)
	}
	// DATA has no place on the control stream.
	b := make([]byte, headerLen+4)
	putHeader(b, frameHeader{StreamID: 3, Type: frameData, Length: 4})
	ctrl.Write(b)
	ev, _ := events.wait(t, 0, 5*time.Second, named(EventEdgeDisconnected))
	if reason := ev.Data.(EdgeDisconnectedEvent).Reason; !strings.Contains(reason, "DATA") {
		t.Fatalf("disconnected for %q", reason)
	}
	select {
	case <-qc.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the hub did not close the QUIC connection")
	}
	rawQUICEdge(t, hub, ourCaps&^capAssign) // the hub serves the next one
}

// udpBlackhole relays one QUIC client to the hub's QUIC port and can drop
// everything both ways, as a dead or blipping link does.
type udpBlackhole struct {
	pc   *net.UDPConn
	drop atomic.Bool
	done chan struct{}
}

func startUDPBlackhole(t *testing.T, to int) *udpBlackhole {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: to})
	if err != nil {
		t.Fatal(err)
	}
	b := &udpBlackhole{pc: pc, done: make(chan struct{})}
	var client atomic.Pointer[net.UDPAddr]
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if a := client.Load(); a != nil && !b.drop.Load() {
				pc.WriteToUDP(buf[:n], a)
			}
		}
	}()
	go func() {
		defer close(b.done)
		buf := make([]byte, 65536)
		for {
			n, a, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			client.Store(a)
			if !b.drop.Load() {
				up.Write(buf[:n])
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); up.Close(); <-b.done })
	return b
}

// Over QUIC as over TLS: a link that goes silent is found dead at the
// keepalive deadline, and a blip shorter than it costs nothing.
func TestQUICKeepaliveDeadlineAndBlips(t *testing.T) {
	tuning := Tuning{KeepaliveInterval: 300 * time.Millisecond, KeepaliveTimeout: 2 * time.Second}
	tg := startTarget(t, echoHandler)
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Tuning: tuning, Logger: testLogger(t)},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	bh := startUDPBlackhole(t, hub.QUICPort())
	events := newEventLog()
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: bh.pc.LocalAddr().(*net.UDPAddr).Port, EdgeID: "edge-1", Secret: "s3cret",
		ListenHost: "127.0.0.1", ListenPorts: []int{tg.port}, StunInterval: -1, Transport: TransportQUIC, Connections: 1,
		ReconnectMin: time.Hour, Tuning: tuning, Logger: testLogger(t), Events: events.sink})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	_, idx := events.wait(t, 0, 5*time.Second, named(EventTunnelConnected))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tg.port))
	bh.drop.Store(true) // a blip of half the deadline
	time.Sleep(tuning.KeepaliveTimeout / 2)
	bh.drop.Store(false)
	echoOnce(t, addr, "after the blip")
	for _, e := range events.snapshot()[idx:] {
		if e.Name == EventTunnelDisconnected {
			t.Fatalf("a blip of %v ended the tunnel: %+v", tuning.KeepaliveTimeout/2, e.Data)
		}
	}
	bh.drop.Store(true)
	start := time.Now()
	ev, _ := events.wait(t, idx, 3*tuning.KeepaliveTimeout, named(EventTunnelDisconnected))
	took := time.Since(start)
	t.Logf("dead link found after %v (deadline %v): %s", took.Round(time.Millisecond), tuning.KeepaliveTimeout, ev.Data.(TunnelDisconnectedEvent).Reason)
	if took < tuning.KeepaliveTimeout*3/4 {
		t.Fatalf("the tunnel ended %v into the silence, before the %v deadline", took, tuning.KeepaliveTimeout)
	}
}

// A hub whose process dies without a word (kill -9: its UDP port closes,
// nothing is sent) is noticed by a QUIC edge as soon as it sends to it, not
// at the idle timeout: the kernel's port-unreachable ends the connection.
func TestQUICDeadHubPortIsNoticed(t *testing.T) {
	tg := startTarget(t, echoHandler)
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Logger: testLogger(t)},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	events := newEventLog()
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hub.Port(), EdgeID: "edge-1", Secret: "s3cret",
		ListenHost: "127.0.0.1", ListenPorts: []int{tg.port}, StunInterval: -1, Transport: TransportQUIC,
		ReconnectMin: time.Hour, Logger: testLogger(t), Events: events.sink})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	_, idx := events.wait(t, 0, 5*time.Second, named(EventTunnelConnected))
	hub.quic.pc.Close() // the port is gone, and nothing told the edge
	start := time.Now()
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tg.port))); err == nil {
		c.Write([]byte("anyone?")) // the edge sends toward the dead port
		defer c.Close()
	}
	ev, _ := events.wait(t, idx, 5*time.Second, named(EventTunnelDisconnected))
	t.Logf("dead hub port noticed after %v: %s", time.Since(start).Round(time.Millisecond), ev.Data.(TunnelDisconnectedEvent).Reason)
}

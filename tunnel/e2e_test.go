package tunnel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// payload makes n deterministic pseudo-random bytes.
func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func TestEndToEndProxyHeaderAndEcho(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr})
		c := r.dial(t)
		msg := []byte("hello through the tunnel")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("echo = %q, want %q", got, msg)
		}
		la := c.LocalAddr().(*net.TCPAddr)
		want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", la.Port, r.target.port)
		hs := r.target.seenHeaders()
		if len(hs) != 1 || hs[0] != want {
			t.Fatalf("target saw headers %q, want [%q]", hs, want)
		}
		ev, _ := r.hubEvents.wait(t, 0, 5*time.Second, named(EventStreamOpened))
		if se := ev.Data.(StreamEvent); se.EdgeID != "edge-1" || se.StreamID == 0 {
			t.Fatalf("streamOpened = %+v", se)
		}
		ev, _ = r.hubEvents.wait(t, 0, 5*time.Second, named(EventStreamClosed))
		if se := ev.Data.(StreamEvent); se.EdgeID != "edge-1" || se.StreamID == 0 {
			t.Fatalf("streamClosed = %+v", se)
		}
		hs0 := r.hub.Status()
		if !hs0.Running || hs0.TunnelPort != r.hub.Port() || len(hs0.ConnectedEdges) != 1 || hs0.ConnectedEdges[0].EdgeID != "edge-1" {
			t.Fatalf("hub status = %+v", hs0)
		}
		es := r.edge.Status()
		if !es.Running || !es.Connected || len(es.ListenPorts) != 1 || es.ListenPorts[0] != r.target.port {
			t.Fatalf("edge status = %+v", es)
		}
	})
}

// Each direction carries 8 MiB at the same time, and both arrive intact.
func TestBulk8MiBEachWay(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		const size = 8 << 20
		down := payload(2, size)
		gotUp := make(chan [32]byte, 1)
		r := startRig(t, rigOptions{transport: tr, handler: func(_ string, c net.Conn, br *bufio.Reader) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				h := sha256.New()
				io.Copy(h, br)
				var sum [32]byte
				copy(sum[:], h.Sum(nil))
				gotUp <- sum
			}()
			c.Write(down)
			c.(*net.TCPConn).CloseWrite()
			<-done
		}})
		up := payload(1, size)
		c := r.dial(t)
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(up)
			c.CloseWrite()
			werr <- err
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, down) {
			t.Fatalf("downstream: got %d bytes, want %d, equal=%v", len(got), len(down), bytes.Equal(got, down))
		}
		if sum := <-gotUp; sum != sha256.Sum256(up) {
			t.Fatal("upstream bytes differ at the target")
		}
	})
}

func TestConcurrentStreams200(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr})
		const n = 200
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				c, err := net.Dial("tcp", r.edgeAddr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				msg := payload(uint64(i+10), 32<<10+i)
				go func() { c.Write(msg); c.(*net.TCPConn).CloseWrite() }()
				got, err := io.ReadAll(c)
				if err != nil {
					errs <- fmt.Errorf("stream %d: %v", i, err)
					return
				}
				if !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("stream %d: got %d bytes, want %d", i, len(got), len(msg))
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		testutil.Eventually(t, 5*time.Second, "all streams closed", func() bool { return r.edge.Status().ActiveStreams == 0 && hubStreams(r.hub) == 0 })
		opened, closed := 0, 0
		for _, ev := range r.hubEvents.snapshot() {
			switch ev.Name {
			case EventStreamOpened:
				opened++
			case EventStreamClosed:
				closed++
			}
		}
		if opened != n || closed != n {
			t.Fatalf("events: %d streamOpened, %d streamClosed, want %d each", opened, closed, n)
		}
	})
}

func hubStreams(h *Hub) int {
	n := 0
	for _, e := range h.Status().ConnectedEdges {
		n += e.ActiveStreams
	}
	return n
}

// The client finishes sending first; the target still answers after EOF.
func TestHalfCloseClientFirst(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr, handler: func(_ string, c net.Conn, br *bufio.Reader) {
			req, _ := io.ReadAll(br) // until the client's FIN
			fmt.Fprintf(c, "got %d bytes: %s", len(req), req)
			c.(*net.TCPConn).CloseWrite()
		}})
		c := r.dial(t)
		c.Write([]byte("question"))
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "got 8 bytes: question" {
			t.Fatalf("got %q", got)
		}
	})
}

// The target finishes sending first; the client sees EOF and can still send.
func TestHalfCloseTargetFirst(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		received := make(chan string, 1)
		r := startRig(t, rigOptions{transport: tr, handler: func(_ string, c net.Conn, br *bufio.Reader) {
			c.Write([]byte("banner"))
			c.(*net.TCPConn).CloseWrite()
			rest, _ := io.ReadAll(br)
			received <- string(rest)
		}})
		c := r.dial(t)
		got, err := io.ReadAll(c) // ends at the target's FIN
		if err != nil || string(got) != "banner" {
			t.Fatalf("read %q, %v", got, err)
		}
		if _, err := c.Write([]byte("after the banner")); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		select {
		case s := <-received:
			if s != "after the banner" {
				t.Fatalf("target received %q", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("target never got the client's bytes after its own FIN")
		}
	})
}

// expectClosed checks that the peer closes c promptly (EOF or reset).
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection was not closed within 5 s")
	}
}

// expectRefused dials addr and checks that the client is turned away
// promptly without an answer: reset at connect (on loopback the edge's reset
// can arrive before connect() returns), or closed with nothing read, within 5 s.
func expectRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.Write([]byte("anyone there?"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection was not closed within 5 s")
	}
	if len(got) != 0 {
		t.Fatalf("a refused client got an answer: %q", got)
	}
}

func TestRefusedTargetClosesClient(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr, extraPort: true})
		expectRefused(t, fmt.Sprintf("127.0.0.1:%d", r.deadPort))
		testutil.Eventually(t, 5*time.Second, "stream gone", func() bool { return r.edge.Status().ActiveStreams == 0 && hubStreams(r.hub) == 0 })
		// The tunnel is unaffected.
		if len(r.hub.Status().ConnectedEdges) != 1 {
			t.Fatal("tunnel dropped after a refused target")
		}
	})
}

func TestTargetResetClosesClient(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr, handler: func(_ string, c net.Conn, br *bufio.Reader) {
			br.ReadByte()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}})
		c := r.dial(t)
		c.Write([]byte("x"))
		expectClosed(t, c)
		testutil.Eventually(t, 5*time.Second, "stream gone", func() bool { return r.edge.Status().ActiveStreams == 0 && hubStreams(r.hub) == 0 })
	})
}

func TestWrongSecretRejected(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr, secret: "not-the-secret", noWait: true})
		ev, _ := r.edgeEvts.wait(t, 0, 10*time.Second, named(EventTunnelDisconnected))
		reason := ev.Data.(TunnelDisconnectedEvent).Reason
		if !strings.Contains(reason, "authentication failed") {
			t.Fatalf("reason = %q", reason)
		}
		if strings.Contains(reason, "not-the-secret") || strings.Contains(reason, "s3cret") {
			t.Fatalf("reason leaks a secret: %q", reason)
		}
		if r.edge.Status().Connected {
			t.Fatal("edge reports connected")
		}
		for _, ev := range r.hubEvents.snapshot() {
			if ev.Name == EventEdgeConnected {
				t.Fatal("hub accepted an edge with a wrong secret")
			}
		}
		// Clients arriving while the tunnel is down are closed at once.
		expectRefused(t, r.edgeAddr)
	})
}

func TestRevokedEdgeIsDisconnected(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr, handler: func(_ string, c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) }})
		c := r.dial(t)
		c.Write([]byte("x"))
		testutil.Eventually(t, 5*time.Second, "stream open", func() bool { return hubStreams(r.hub) == 1 })
		if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "other", Secret: "x"}}); err != nil {
			t.Fatal(err)
		}
		ev, _ := r.hubEvents.wait(t, 0, 5*time.Second, named(EventEdgeDisconnected))
		if d := ev.Data.(EdgeDisconnectedEvent); d.EdgeID != "edge-1" || !strings.Contains(d.Reason, "no longer allowed") {
			t.Fatalf("edgeDisconnected = %+v", d)
		}
		ev, _ = r.edgeEvts.wait(t, 0, 5*time.Second, named(EventTunnelDisconnected))
		if reason := ev.Data.(TunnelDisconnectedEvent).Reason; !strings.Contains(reason, "no longer allowed") {
			t.Fatalf("edge reason = %q", reason)
		}
		expectClosed(t, c)
		if n := len(r.hub.Status().ConnectedEdges); n != 0 {
			t.Fatalf("%d edges still connected", n)
		}
	})
}

func TestChangedSecretDisconnects(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr})
		if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "edge-1", Secret: "rotated"}}); err != nil {
			t.Fatal(err)
		}
		ev, _ := r.hubEvents.wait(t, 0, 5*time.Second, named(EventEdgeDisconnected))
		if d := ev.Data.(EdgeDisconnectedEvent); !strings.Contains(d.Reason, "credentials changed") {
			t.Fatalf("edgeDisconnected = %+v", d)
		}
		// An invalid list changes nothing: the rotated secret stays in force.
		if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "a", Secret: "1"}, {ID: "a", Secret: "2"}}); err == nil {
			t.Fatal("duplicate ids accepted")
		}
		if s, ok := r.hub.lookupSecret("edge-1"); !ok || s != "rotated" {
			t.Fatal("a rejected list changed the allow list")
		}
	})
}

func TestHubRestartEdgeReconnects(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr})
		port := r.hub.Port()
		r.hub.Close()
		r.edgeEvts.wait(t, 0, 5*time.Second, named(EventTunnelDisconnected))
		_, idx := r.edgeEvts.wait(t, 0, 5*time.Second, named(EventTunnelDisconnected))
		hub2, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TunnelPort: port, TargetHost: "127.0.0.2",
			Logger: testLogger(t), Events: r.hubEvents.sink},
			[]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1"}})
		if err != nil {
			t.Fatalf("restart hub: %v", err)
		}
		defer hub2.Close()
		r.edgeEvts.wait(t, idx, 10*time.Second, named(EventTunnelConnected))
		c := r.dial(t)
		c.Write([]byte("again"))
		c.CloseWrite()
		got, _ := io.ReadAll(c)
		if string(got) != "again" {
			t.Fatalf("after reconnect got %q", got)
		}
	})
}

func TestGoroutinesBackToBaseline(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		base := runtime.NumGoroutine()
		func() {
			r := startRig(t, rigOptions{transport: tr})
			for i := 0; i < 20; i++ {
				c, err := net.Dial("tcp", r.edgeAddr)
				if err != nil {
					t.Fatal(err)
				}
				c.Write([]byte("ping"))
				if i%2 == 0 {
					c.(*net.TCPConn).CloseWrite()
					io.ReadAll(c)
				}
				c.Close()
			}
			r.edge.Close()
			r.hub.Close()
			r.target.close()
		}()
		if !testutil.Poll(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
	})
}

// rawEdge authenticates by hand and returns the TLS connection.
func rawEdge(t *testing.T, hubPort int, id, secret string) *tls.Conn {
	t.Helper()
	return rawEdgeCaps(t, hubPort, id, secret, ourCaps)
}

// rawEdgeCaps is rawEdge announcing caps.
func rawEdgeCaps(t *testing.T, hubPort int, id, secret string, caps uint32) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hubPort), edgeTLSConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := edgeHandshake(c, id, secret, DefaultWindow, setPlace{Size: 1}, caps); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return c
}

func TestSecondTunnelReplacesFirst(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr})
		_, idx := r.hubEvents.wait(t, 0, 5*time.Second, named(EventEdgeConnected))
		rawEdge(t, r.hub.Port(), "edge-1", "s3cret-edge-1") // closed by its cleanup
		ev, i := r.hubEvents.wait(t, idx+1, 5*time.Second, named(EventEdgeDisconnected))
		if d := ev.Data.(EdgeDisconnectedEvent); !strings.Contains(d.Reason, "replaced") {
			t.Fatalf("old tunnel ended with %q", d.Reason)
		}
		r.hubEvents.wait(t, i+1, 5*time.Second, named(EventEdgeConnected))
		if n := len(r.hub.Status().ConnectedEdges); n != 1 {
			t.Fatalf("%d tunnels for one edge id", n)
		}
	})
}

func TestProtocolErrorClosesOnlyThatTunnel(t *testing.T) {
	r := startRig(t, rigOptions{})
	if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1"}, {ID: "evil", Secret: "e"}}); err != nil {
		t.Fatal(err)
	}
	raw := rawEdge(t, r.hub.Port(), "evil", "e")
	fw := newFrameWriter(raw)
	fw.WriteFrame(77, frameData, []byte("no such stream"))
	ev, _ := r.hubEvents.wait(t, 0, 5*time.Second, func(e Event) bool {
		d, ok := e.Data.(EdgeDisconnectedEvent)
		return ok && d.EdgeID == "evil"
	})
	if d := ev.Data.(EdgeDisconnectedEvent); !strings.Contains(d.Reason, "protocol error") {
		t.Fatalf("reason = %q", d.Reason)
	}
	c := r.dial(t)
	c.Write([]byte("still fine"))
	c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "still fine" {
		t.Fatalf("other edge disturbed: got %q", got)
	}
}

// A hub that authenticates and then goes silent is detected by keepalive.
func TestKeepaliveDetectsDeadHub(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert, _ := hubCertificate("", "")
	var mu sync.Mutex
	var silent []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, hubTLSConfig(cert))
			res, err := hubHandshake(tc, DefaultWindow, func(string) (string, bool) { return "k", true }, nil)
			if err != nil {
				c.Close()
				continue
			}
			// The first assignment, on the first connection of the set, as a real hub sends it (assign.go).
			if err := sendFirstAssignLike(tc, res.set); err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			silent = append(silent, c) // never read nor written again
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		<-accepted
		for _, c := range silent {
			c.Close()
		}
	}()
	events := newEventLog()
	e, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: ln.Addr().(*net.TCPAddr).Port, EdgeID: "e", Secret: "k",
		ListenHost: "127.0.0.1", ListenPorts: []int{testutil.FreePort(t, "127.0.0.1", "127.0.0.2")}, StunInterval: -1, ReconnectMin: time.Hour,
		Tuning: Tuning{KeepaliveInterval: 100 * time.Millisecond, KeepaliveTimeout: 600 * time.Millisecond},
		Logger: testLogger(t), Events: events.sink})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	events.wait(t, 0, 5*time.Second, named(EventTunnelConnected))
	ev, _ := events.wait(t, 0, 5*time.Second, named(EventTunnelDisconnected))
	if reason := ev.Data.(TunnelDisconnectedEvent).Reason; !strings.Contains(reason, "keepalive timeout") {
		t.Fatalf("reason = %q", reason)
	}
}

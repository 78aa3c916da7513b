package tunnel

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// sessionPair is the mux alone: a hub-side and an edge-side session over one
// plain loopback TCP connection, with no TLS, no handshake, no Hub and no
// Edge. Both sessions use the same tuning and announce its window to each
// other, as the handshake would. A stream starts with dial, which hands the
// edge session one end of a fresh socket pair; the hub session's OPEN hook
// (attachTarget, unless a test sets onOpen) attaches another socket pair and
// sends the test's end of it to targets. All sockets are TCP: the streams'
// non-blocking reads and writes (sockio_unix.go) need a file descriptor.
type sessionPair struct {
	hub, edge *session
	tuning    Tuning
	// targets receives, for each stream the hub accepts, the test's end of
	// the socket the hub stream relays to.
	targets chan *net.TCPConn
	// onOpen, when set, replaces attachTarget as the hub's OPEN hook.
	onOpen atomic.Pointer[func(st *stream, hdr proxyproto.Header)]

	t    testing.TB
	ln   net.Listener
	mu   sync.Mutex // serialises socketPair's dial and accept
	ends []net.Conn // the test's sockets, closed at cleanup
}

// pairHeader is the PROXY header of the pair's streams.
var pairHeader = []byte("PROXY TCP4 198.51.100.7 127.0.0.1 4242 443\r\n")

func newSessionPair(t testing.TB, tuning Tuning) *sessionPair {
	t.Helper()
	tuning = tuning.withDefaults()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &sessionPair{tuning: tuning, targets: make(chan *net.TCPConn, 256), t: t, ln: ln}
	hubConn, edgeConn := p.socketPair()
	peer := peerParams{window: tuning.Window, caps: ourCaps}
	log := testLogger(t)
	p.hub = newSession(hubConn, true, tuning, peer, log.With("t", "hub"), sessionHooks{open: func(st *stream, hdr proxyproto.Header) {
		if hook := p.onOpen.Load(); hook != nil {
			(*hook)(st, hdr)
			return
		}
		p.attachTarget(st)
	}})
	p.edge = newSession(edgeConn, false, tuning, peer, log.With("t", "edge"), sessionHooks{})
	var wg sync.WaitGroup
	for _, s := range []*session{p.hub, p.edge} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.run()
		}()
	}
	t.Cleanup(func() {
		p.hub.close(nil)
		p.edge.close(nil)
		wg.Wait()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.ends {
			_ = c.Close()
		}
		_ = ln.Close()
	})
	return p
}

// socketPair returns the two ends of a new loopback TCP connection.
func (p *sessionPair) socketPair() (*net.TCPConn, *net.TCPConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		p.t.Errorf("socket pair: %v", err)
		return nil, nil
	}
	b, err := p.ln.Accept()
	if err != nil {
		_ = a.Close()
		p.t.Errorf("socket pair: %v", err)
		return nil, nil
	}
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// testEnd registers c to be closed at cleanup.
func (p *sessionPair) testEnd(c *net.TCPConn) *net.TCPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ends = append(p.ends, c)
	return c
}

// attachTarget is the default OPEN hook: like the hub's dialTarget, without
// the dial and the PROXY header.
func (p *sessionPair) attachTarget(st *stream) {
	st.sess.goSafe(func() {
		ours, theirs := p.socketPair()
		if ours == nil {
			st.abort("no socket", true)
			return
		}
		if !st.attach(ours) {
			_ = theirs.Close()
			return
		}
		p.targets <- p.testEnd(theirs)
		st.upstream()
	})
}

// dial starts an edge stream and returns the test's end of its client
// socket.
func (p *sessionPair) dial(t testing.TB) *net.TCPConn {
	t.Helper()
	client, ours := p.socketPair()
	if client == nil {
		t.FailNow()
	}
	p.testEnd(client)
	if _, err := p.edge.startStream(ours, pairHeader, nil); err != nil {
		_ = ours.Close()
		t.Fatalf("startStream: %v", err)
	}
	return client
}

// target waits for the hub's next stream and returns the test's end of its
// target socket.
func (p *sessionPair) target(t testing.TB) *net.TCPConn {
	t.Helper()
	select {
	case c := <-p.targets:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the hub to attach a stream")
		return nil
	}
}

// open starts a stream and returns its client and target sockets.
func (p *sessionPair) open(t testing.TB) (client, target *net.TCPConn) {
	t.Helper()
	client = p.dial(t)
	return client, p.target(t)
}

// streams is the number of live streams of the hub and of the edge session.
func (p *sessionPair) streams() (hub, edge int) {
	return p.hub.activeStreams(), p.edge.activeStreams()
}

// onlyStream returns the single stream of sess.
func onlyStream(t *testing.T, sess *session) *stream {
	t.Helper()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if len(sess.streams) != 1 {
		t.Fatalf("%d streams, want 1", len(sess.streams))
	}
	for _, st := range sess.streams {
		return st
	}
	return nil
}

// An idle tunnel stays up on its PINGs and PONGs alone, well past the
// keepalive timeout.
func TestKeepaliveKeepsAnIdleTunnelUp(t *testing.T) {
	p := newSessionPair(t, Tuning{KeepaliveInterval: 50 * time.Millisecond, KeepaliveTimeout: 300 * time.Millisecond})
	time.Sleep(time.Second)
	for _, s := range []*session{p.hub, p.edge} {
		select {
		case <-s.done():
			t.Fatalf("an idle tunnel ended: %v", s.closeErr)
		default:
		}
		if n := s.recvFrames.Load(); n < 5 {
			t.Fatalf("%d frames received in a second of pings every 50 ms", n)
		}
	}
	c, tg := p.open(t)
	c.Write([]byte("x"))
	if _, err := tg.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

// A peer that sends nothing at all, not even PONGs, is given up on after
// the keepalive timeout.
func TestKeepaliveClosesASilentTunnel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ours, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	silent, err := ln.Accept() // never read nor written
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tuning := Tuning{KeepaliveInterval: 50 * time.Millisecond, KeepaliveTimeout: 300 * time.Millisecond}.withDefaults()
	s := newSession(ours, false, tuning, peerParams{window: tuning.Window}, testLogger(t), sessionHooks{})
	start := time.Now()
	err = s.run()
	if !strings.Contains(fmt.Sprint(err), "keepalive timeout") {
		t.Fatalf("session ended with %v, want a keepalive timeout", err)
	}
	if d := time.Since(start); d < tuning.KeepaliveTimeout || d > 3*time.Second {
		t.Fatalf("gave up after %s, timeout %s", d, tuning.KeepaliveTimeout)
	}
}

package tunnel

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

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

func (st *stream) window() uint32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.recvWindow
}

func hubSession(t *testing.T, r *rig) *session {
	t.Helper()
	r.hub.mu.Lock()
	defer r.hub.mu.Unlock()
	for _, e := range r.hub.edges {
		conns := e.sessionsLocked()
		if len(conns) != 1 {
			t.Fatalf("edge has %d connections, want 1", len(conns))
		}
		return conns[0]
	}
	t.Fatal("no edge on the hub")
	return nil
}

// edgeSession returns the edge's only tunnel connection.
func edgeSession(t *testing.T, r *rig) *session {
	t.Helper()
	r.edge.mu.Lock()
	defer r.edge.mu.Unlock()
	if r.edge.tunnel == nil || len(r.edge.tunnel.sessions) != 1 {
		t.Fatal("the edge has no tunnel of one connection")
	}
	return r.edge.tunnel.sessions[0]
}

// A stream whose reader keeps up grows its receive window to MaxWindow, in
// both directions, and the growth is given back to the tunnel's budget when
// the stream ends.
func TestWindowGrowsWhileTheReaderKeepsUp(t *testing.T) {
	const n = 16 << 20
	tuning := Tuning{Window: 64 << 10, MaxWindow: 1 << 20}
	r := startRig(t, rigOptions{tuning: tuning, connections: 1, handler: func(_ string, c net.Conn, br *bufio.Reader) {
		// Take n bytes, send n bytes, then hold the stream open until
		// the client closes it.
		if _, err := io.CopyN(io.Discard, br, n); err != nil {
			return
		}
		if _, err := c.Write(make([]byte, n)); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, br)
	}})
	c := r.dial(t)
	go c.Write(make([]byte, n))
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.CopyN(io.Discard, c, n); err != nil {
		t.Fatal(err)
	}
	hs, es := hubSession(t, r), edgeSession(t, r)
	if w := onlyStream(t, hs).window(); w != tuning.MaxWindow {
		t.Errorf("hub's receive window after %d bytes client→target: %d, want %d", n, w, tuning.MaxWindow)
	}
	if w := onlyStream(t, es).window(); w != tuning.MaxWindow {
		t.Errorf("edge's receive window after %d bytes target→client: %d, want %d", n, w, tuning.MaxWindow)
	}
	grown := int64(tuning.MaxWindow - tuning.Window)
	if g := hs.grown.Load(); g != grown {
		t.Errorf("hub session growth %d, want %d", g, grown)
	}
	c.Close()
	testutil.Eventually(t, 5*time.Second, "the stream to end", func() bool { return r.edge.Status().ActiveStreams == 0 })
	testutil.Eventually(t, 5*time.Second, "the growth to be returned", func() bool { return hs.grown.Load() == 0 && es.grown.Load() == 0 })
}

// The windows of one tunnel grow by at most WindowBudget together.
func TestWindowGrowthWithinTheTunnelBudget(t *testing.T) {
	const n = 8 << 20
	tuning := Tuning{Window: 64 << 10, MaxWindow: 1 << 20, WindowBudget: 1 << 20}
	done := make(chan struct{})
	r := startRig(t, rigOptions{tuning: tuning, connections: 1, handler: func(_ string, c net.Conn, br *bufio.Reader) {
		if _, err := c.Write(make([]byte, n)); err != nil {
			return
		}
		<-done
	}})
	defer close(done)
	const streams = 4
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		c := r.dial(t)
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.CopyN(io.Discard, c, n)
			errs <- err
		}()
	}
	for i := 0; i < streams; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	es := edgeSession(t, r)
	var sum int64
	es.mu.Lock()
	for _, st := range es.streams {
		w := st.window()
		if w < tuning.Window || w > tuning.MaxWindow {
			t.Errorf("stream %d has window %d, want %d..%d", st.id, w, tuning.Window, tuning.MaxWindow)
		}
		sum += int64(w - tuning.Window)
	}
	es.mu.Unlock()
	if sum > int64(tuning.WindowBudget) || sum != es.grown.Load() {
		t.Fatalf("windows grew by %d in total (session counts %d), budget %d", sum, es.grown.Load(), tuning.WindowBudget)
	}
	if sum == 0 {
		t.Fatal("no window grew at all")
	}
}

// A peer that sends many one-byte DATA frames to a stream whose bytes
// cannot be written yet makes it hold about those bytes, not a pooled buffer
// per frame, and the bytes stay in order.
func TestTinyFramesDoNotAmplifyMemory(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	s := newSession(a, true, Tuning{}.withDefaults(), peerParams{window: DefaultWindow}, testLogger(t), sessionHooks{})
	st := newStream(s, 1, nil) // not attached yet: everything is queued
	const frames = 4096
	want := make([]byte, 0, frames)
	for i := 0; i < frames; i++ {
		if err := st.reserve(1); err != nil {
			t.Fatal(err)
		}
		bp := getBuf(1)
		(*bp)[0] = byte(i * 7)
		want = append(want, byte(i*7))
		if err := st.pushData(bp); err != nil {
			t.Fatal(err)
		}
	}
	st.mu.Lock()
	held, got := 0, []byte(nil)
	for _, c := range st.recvQ {
		held += cap(*c.bp)
		got = append(got, (*c.bp)[c.off:]...)
	}
	st.mu.Unlock()
	if held > frames+smallBuf {
		t.Errorf("%d one-byte frames hold %d bytes of buffers, want at most %d", frames, held, frames+smallBuf)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("queued bytes differ from the frames' payloads (%d bytes, want %d)", len(got), len(want))
	}
}

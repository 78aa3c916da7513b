package tunnel

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

func (st *stream) window() uint32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.recvWindow
}

// A stream whose reader keeps up grows its receive window to MaxWindow, in
// both directions, and the growth is given back to the tunnel's budget when
// the stream ends.
func TestWindowGrowsWhileTheReaderKeepsUp(t *testing.T) {
	const n = 16 << 20
	tuning := Tuning{Window: 64 << 10, MaxWindow: 1 << 20}
	p := newSessionPair(t, tuning)
	c, tg := p.open(t)
	go c.Write(make([]byte, n))
	_ = tg.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.CopyN(io.Discard, tg, n); err != nil {
		t.Fatal(err)
	}
	go tg.Write(make([]byte, n))
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.CopyN(io.Discard, c, n); err != nil {
		t.Fatal(err)
	}
	if w := onlyStream(t, p.hub).window(); w != tuning.MaxWindow {
		t.Errorf("hub's receive window after %d bytes client→target: %d, want %d", n, w, tuning.MaxWindow)
	}
	if w := onlyStream(t, p.edge).window(); w != tuning.MaxWindow {
		t.Errorf("edge's receive window after %d bytes target→client: %d, want %d", n, w, tuning.MaxWindow)
	}
	grown := int64(tuning.MaxWindow - tuning.Window)
	if g := p.hub.grown.Load(); g != grown {
		t.Errorf("hub session growth %d, want %d", g, grown)
	}
	c.Close()
	tg.Close()
	testutil.Eventually(t, 5*time.Second, "the stream to end", func() bool { h, e := p.streams(); return h == 0 && e == 0 })
	testutil.Eventually(t, 5*time.Second, "the growth to be returned", func() bool { return p.hub.grown.Load() == 0 && p.edge.grown.Load() == 0 })
}

// The windows of one tunnel grow by at most WindowBudget together.
func TestWindowGrowthWithinTheTunnelBudget(t *testing.T) {
	const n = 8 << 20
	tuning := Tuning{Window: 64 << 10, MaxWindow: 1 << 20, WindowBudget: 1 << 20}
	p := newSessionPair(t, tuning)
	const streams = 4
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		c, tg := p.open(t)
		go tg.Write(make([]byte, n))
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
	es := p.edge
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

// A client that never reads must not hold up another stream, and what is
// buffered for it stays within the window on the edge.
func TestStalledStreamDoesNotBlockOthers(t *testing.T) {
	const bulk = 32 << 20
	tuning := Tuning{Window: 256 << 10, MaxWindow: 1 << 20}
	p := newSessionPair(t, tuning)
	chunk := make([]byte, 64<<10)
	stalled, stalledTarget := p.open(t)
	stalled.SetReadBuffer(4096)
	stalledSent := make(chan struct{})
	go func() { // write until the tunnel pushes back, forever
		for i := 0; ; i++ {
			if i == 64 {
				close(stalledSent)
			}
			if _, err := stalledTarget.Write(chunk); err != nil {
				return
			}
		}
	}()
	select {
	case <-stalledSent: // 4 MiB left the target: the stalled path is full
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled stream never filled")
	}
	b, bulkTarget := p.open(t)
	go func() {
		for sent := 0; sent < bulk; sent += len(chunk) {
			if _, err := bulkTarget.Write(chunk); err != nil {
				return
			}
		}
		bulkTarget.CloseWrite()
	}()
	b.SetReadDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(io.Discard, b)
	if err != nil || n != bulk {
		t.Fatalf("bulk stream got %d of %d bytes: %v", n, bulk, err)
	}
	b.Close()
	bulkTarget.Close()
	testutil.Eventually(t, 5*time.Second, "the bulk stream to end", func() bool { _, e := p.streams(); return e == 1 })
	// The edge holds at most one window for the stalled stream. Its window
	// may have grown while the kernel still took the bytes, never beyond
	// MaxWindow, and it holds no more than that window.
	st := onlyStream(t, p.edge)
	window := st.window()
	if buf := st.buffered(); buf > int(window) || window > tuning.MaxWindow {
		t.Fatalf("edge buffers %d bytes for the stalled stream, window %d, max %d", buf, window, tuning.MaxWindow)
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

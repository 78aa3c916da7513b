package tunnel

import (
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// outcome says how reading r from c ended: a reset or a clean EOF. A
// writer on c may have consumed the reset's error first, after which a read
// sees EOF: the socket's TCP state tells a reset from a FIN then.
func outcome(c net.Conn, r io.Reader) string {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r)
	switch {
	case err == nil && wasReset(c):
		return "reset"
	case err == nil:
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	default:
		return err.Error()
	}
}

// A client that resets while bytes to it are stuck in the tunnel (so the
// edge's write side meets the reset first) must reach the target as a
// reset, never as a clean close that makes a cut-off upload look complete.
func TestClientResetArrivesAsReset(t *testing.T) {
	skipUnlessLinux(t)
	p := newSessionPair(t, Tuning{Window: 64 << 10})
	for i := 0; i < 20; i++ {
		c, tg := p.open(t)
		go func() { // keep the client's direction full
			chunk := make([]byte, 64<<10)
			for {
				if _, err := tg.Write(chunk); err != nil {
					return
				}
			}
		}()
		ended := make(chan string, 1)
		go func() { ended <- outcome(tg, tg) }()
		c.Write([]byte("upload that will be cut off"))
		time.Sleep(20 * time.Millisecond) // let the target fill the path to the client
		c.SetLinger(0)
		c.Close()
		if got := <-ended; got != "reset" {
			t.Fatalf("round %d: the target saw %q, want a reset", i, got)
		}
		testutil.Eventually(t, 5*time.Second, "the stream to end", func() bool { h, e := p.streams(); return h == 0 && e == 0 })
	}
}

// Likewise the other way: a target reset reaches the client as a reset.
func TestTargetResetArrivesAsReset(t *testing.T) {
	skipUnlessLinux(t)
	p := newSessionPair(t, Tuning{Window: 64 << 10})
	for i := 0; i < 20; i++ {
		c, tg := p.open(t)
		go func() { // the target never reads: the upload fills the path to it
			chunk := make([]byte, 64<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		time.Sleep(20 * time.Millisecond)
		tg.SetLinger(0)
		tg.Close()
		if got := outcome(c, c); got != "reset" {
			t.Fatalf("round %d: the client saw %q, want a reset", i, got)
		}
		testutil.Eventually(t, 5*time.Second, "the stream to end", func() bool { h, e := p.streams(); return h == 0 && e == 0 })
	}
}

// skipUnlessLinux: telling a reset from a FIN after the fact needs TCP_INFO.
func skipUnlessLinux(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux's TCP_INFO to tell a reset from a FIN")
	}
}

// Both sides half-close at nearly the same time: the client's FIN reaches
// the edge, and the target's CLOSE_BACK makes the edge shut down its write
// side before the edge has decided what the client's EOF was. The client
// socket then goes CLOSE_WAIT → LAST_ACK → CLOSE by our own FIN, which must
// not be taken for a reset: the target sees a clean EOF of the upload and
// the client a clean EOF of the answer. (The soak hit this once in ~4 000
// half-close operations; the hook widens the window to 100 ms.)
func TestSimultaneousHalfClosesAreNotResets(t *testing.T) {
	skipUnlessLinux(t)
	p := newSessionPair(t, Tuning{})
	hook := func() { time.Sleep(100 * time.Millisecond) }
	testHookUpstreamEOF.Store(&hook)
	defer testHookUpstreamEOF.Store(nil)
	for i := 0; i < 3; i++ {
		c, tg := p.open(t)
		ended := make(chan string, 1)
		go func() {
			tg.Write([]byte("answer"))
			tg.CloseWrite() // before the upload has ended
			// No more writes here, so a reset shows as ECONNRESET on this
			// read (and the TCP state cannot tell: our FIN went first).
			tg.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, tg)
			switch {
			case err == nil:
				ended <- "eof"
			case errors.Is(err, syscall.ECONNRESET):
				ended <- "reset"
			default:
				ended <- err.Error()
			}
		}()
		c.Write([]byte("upload"))
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "answer" {
			t.Fatalf("round %d: the client read %q, %v; want the answer and a clean EOF", i, got, err)
		}
		if o := <-ended; o != "eof" {
			t.Fatalf("round %d: the target saw %q, want a clean EOF", i, o)
		}
		tg.Close()
		testutil.Eventually(t, 5*time.Second, "the stream to end", func() bool { h, e := p.streams(); return h == 0 && e == 0 })
	}
}

//go:build linux

package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// Idle streams hibernate on both sides: their upstream goroutines end (the
// only goroutines left per stream are the test target's), and every way a
// socket can wake one (data, a half-close, a reset, the tunnel closing)
// still does its job.
func TestIdleStreamsHibernateAndWake(t *testing.T) {
	const n = 40
	r := startRig(t, rigOptions{tuning: Tuning{idleAfter: 20 * time.Millisecond}})
	base := runtime.NumGoroutine()
	conns := make([]*net.TCPConn, n)
	buf := make([]byte, 5)
	for i := range conns {
		conns[i] = r.dial(t)
		if _, err := conns[i].Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conns[i], buf); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	// Awake: upstream on the edge and on the hub, and the target's handler.
	// Hibernating: the target's handler alone, beside one idle poller per
	// tunnel connection and side (four) and a little slack.
	testutil.Eventually(t, 10*time.Second, "idle streams to hibernate", func() bool {
		return runtime.NumGoroutine() <= base+n+8
	})
	if got := hubStreams(r.hub); got != n {
		t.Fatalf("%d streams on the hub after hibernating, want %d", got, n)
	}

	// Data wakes the edge side, the echo wakes the hub side; then both
	// hibernate again.
	for i, c := range conns[:n/2] {
		msg := bytes.Repeat([]byte{byte('a' + i%26)}, 100<<10)
		go c.Write(msg)
		got := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("stream %d after waking: %v", i, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "woken streams to hibernate again", func() bool {
		return runtime.NumGoroutine() <= base+n+8
	})

	// A half-close of a hibernating stream reaches the target as EOF; the
	// target's own half-close (the echo handler's answer) reaches the client.
	c := conns[n/2]
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("half-closed hibernating stream: %q, %v", rest, err)
	}

	// A reset of a hibernating stream resets the target's side.
	c = conns[n/2+1]
	c.SetLinger(0)
	c.Close()
	testutil.Eventually(t, 10*time.Second, "the reset stream to end", func() bool { return hubStreams(r.hub) <= n-2 })

	// Closing the tunnel ends hibernating streams too, and no goroutine of
	// the idle poller outlives its session.
	r.edge.Close()
	for _, c := range conns[n/2+2:] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(buf)
		if err == nil {
			t.Fatal("a hibernating stream's client read data after the tunnel closed")
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("hibernating stream after the tunnel closed: %v", err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "every stream to end on the hub", func() bool { return hubStreams(r.hub) == 0 })
}

// A session whose idle streams have all ended holds no idle poller: neither
// its goroutine nor its epoll descriptor (a process back at rest looks as it
// did before the traffic).
func TestIdlePollerEndsWithItsLastStream(t *testing.T) {
	r := startRig(t, rigOptions{tuning: Tuning{idleAfter: 20 * time.Millisecond}, connections: 1})
	base := runtime.NumGoroutine()
	fds := openFDs(t)
	const n = 4
	var conns []*net.TCPConn
	buf := make([]byte, 2)
	for i := 0; i < n; i++ {
		c := r.dial(t)
		c.Write([]byte("hi"))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Awake: 3 goroutines a stream (upstream on each side, the target's
	// handler); hibernating: the handler, and one poller on each side.
	testutil.Eventually(t, 10*time.Second, "the streams to hibernate", func() bool {
		return runtime.NumGoroutine() == base+n+2
	})
	for _, c := range conns {
		c.Close()
	}
	testutil.Eventually(t, 10*time.Second, "goroutines and descriptors back to their count before the streams", func() bool {
		return hubStreams(r.hub) == 0 && runtime.NumGoroutine() == base && openFDs(t) == fds
	})
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

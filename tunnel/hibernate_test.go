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
	allAsleep := func() bool {
		hub, edge := hibernating(r)
		return hub == n && edge == n
	}
	testutil.Eventually(t, 10*time.Second, "idle streams to hibernate on both sides", allAsleep)
	// Awake, a stream has an upstream goroutine on each side; asleep none.
	// What is left per stream is the test target's handler, beside one idle
	// poller per tunnel connection and side (four) and some slack for the
	// runtime's and the rig's own (ten are seen). (Counted against the goroutines before the streams
	// opened: with idleAfter this short, a count "while awake" would catch
	// some of them asleep already.)
	if extra := runtime.NumGoroutine() - base; extra > n+16 {
		t.Fatalf("%d more goroutines with %d streams hibernating than before they opened: want at most %d (awake they would add %d)", extra, n, n+16, 3*n)
	}
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
	testutil.Eventually(t, 10*time.Second, "woken streams to hibernate again", allAsleep)

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
	// Only Go's own netpoller once the pollers of earlier tests are gone.
	testutil.Eventually(t, 10*time.Second, "earlier tests' pollers to end", func() bool { return epollFDs(t) == 1 })
	r := startRig(t, rigOptions{tuning: Tuning{idleAfter: 20 * time.Millisecond}, connections: 1, noQUIC: true})
	// The rig's last goroutines (the hub session's writer and keepalive)
	// start a moment after it reports the tunnel up; the hub and the edge
	// each run a sweeper of idle UDP flows.
	testutil.Eventually(t, 10*time.Second, "the hub's session to run", func() bool { return runtime.NumGoroutine() >= 13 })
	base, epolls := runtime.NumGoroutine(), epollFDs(t)
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
	testutil.Eventually(t, 10*time.Second, "the streams to hibernate on both sides", func() bool {
		hub, edge := hibernating(r)
		return hub == n && edge == n
	})
	if got := epollFDs(t); got != epolls+2 {
		t.Fatalf("%d epoll descriptors with streams hibernating on both sides, want %d", got, epolls+2)
	}
	for _, c := range conns {
		c.Close()
	}
	if !testutil.Poll(10*time.Second, func() bool {
		return hubStreams(r.hub) == 0 && epollFDs(t) == epolls && runtime.NumGoroutine() <= base
	}) {
		hub, edge := hibernating(r)
		t.Fatalf("after the streams ended: %d streams on the hub (%d, %d hibernating), %d epoll descriptors (before %d), %d goroutines (before %d)",
			hubStreams(r.hub), hub, edge, epollFDs(t), epolls, runtime.NumGoroutine(), base)
	}
}

// hibernating counts the hibernating streams of the rig's hub and edge.
func hibernating(r *rig) (hub, edge int) {
	count := func(sessions []*session) int {
		n := 0
		for _, s := range sessions {
			s.mu.Lock()
			for _, st := range s.streams {
				st.mu.Lock()
				if st.state.has(stHibernating) {
					n++
				}
				st.mu.Unlock()
			}
			s.mu.Unlock()
		}
		return n
	}
	var hs, es []*session
	r.hub.mu.Lock()
	for _, e := range r.hub.edges {
		for _, c := range e.connsLocked() {
			hs = append(hs, c.(*session))
		}
	}
	r.hub.mu.Unlock()
	r.edge.mu.Lock()
	for _, l := range r.edge.links {
		if l.tunnel != nil {
			for _, c := range l.tunnel.conns {
				es = append(es, c.(*session))
			}
		}
	}
	r.edge.mu.Unlock()
	return count(hs), count(es)
}

// epollFDs counts this process's epoll descriptors: Go's own netpoller's
// and the idle pollers'.
func epollFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "anon_inode:[eventpoll]" {
			n++
		}
	}
	return n
}

package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// finishEcho writes more through c, half-closes and reads the whole echo back.
func finishEcho(t *testing.T, c *net.TCPConn, sent, more string) {
	t.Helper()
	if _, err := c.Write([]byte(more)); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != sent+more {
		t.Fatalf("echo = %q, %v; want %q", got, err, sent+more)
	}
}

// refuses reports whether a connection to addr is refused.
func refuses(addr string) func() bool {
	return func() bool {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			nc.Close()
		}
		return err != nil
	}
}

// waitShutdown waits for a Shutdown that must return nil once the last stream ended.
func waitShutdown(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last stream ended")
	}
}

// shutdownAsync runs shutdown in the background and returns its result channel.
func shutdownAsync(shutdown func(context.Context) error, ctx context.Context) chan error {
	done := make(chan error, 1)
	go func() { done <- shutdown(ctx) }()
	return done
}

// Edge.Shutdown closes the listeners at once, lets an open stream finish
// and returns once it has, with nil.
func TestEdgeShutdownDrainsOpenStreams(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr, connections: 1})
		c := r.dial(t)
		if _, err := c.Write([]byte("first ")); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, "the stream is open", func() bool { return r.edge.Status().ActiveStreams == 1 })
		done := shutdownAsync(r.edge.Shutdown, context.Background())
		testutil.Eventually(t, 10*time.Second, "the listener refuses", refuses(r.edgeAddr))
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a stream open", err)
		case <-time.After(100 * time.Millisecond):
		}
		finishEcho(t, c, "first ", "second")
		waitShutdown(t, done)
		if r.edge.Status().Running {
			t.Fatal("edge still running after Shutdown")
		}
	})
}

// When ctx ends first, Edge.Shutdown closes the remaining streams and
// returns ctx's error.
func TestEdgeShutdownCutsStreamsAtTheDeadline(t *testing.T) {
	r := startRig(t, rigOptions{connections: 1})
	c := r.dial(t)
	c.Write([]byte("x"))
	testutil.Eventually(t, 10*time.Second, "the stream is open", func() bool { return r.edge.Status().ActiveStreams == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.edge.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %s", d)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil && errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("client not closed: %v", err)
	}
}

// Hub.Shutdown closes the tunnel port, refuses new streams (the client is
// closed), lets the open stream finish, then stops.
func TestHubShutdownDrainsAndRefusesNewStreams(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr, connections: 1})
		c := r.dial(t)
		if _, err := c.Write([]byte("first ")); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, "the stream is open at the hub", func() bool {
			st := r.hub.Status()
			return len(st.ConnectedEdges) == 1 && st.ConnectedEdges[0].ActiveStreams == 1
		})
		done := shutdownAsync(r.hub.Shutdown, context.Background())
		tunnelAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(r.hub.Port()))
		testutil.Eventually(t, 10*time.Second, "the tunnel port refuses", refuses(tunnelAddr))
		// DRAIN reaches the edge on its own path (on QUIC, the control
		// stream); a stream the edge opened before reading it is served.
		testutil.Eventually(t, 10*time.Second, "the edge to read DRAIN", func() bool { return r.edge.Status().Hubs[0].Draining })
		// A new client gets through to the edge but its stream is refused: it is closed without an answer.
		expectRefused(t, r.edgeAddr)
		finishEcho(t, c, "first ", "second")
		waitShutdown(t, done)
		if r.hub.Status().Running {
			t.Fatal("hub still running after Shutdown")
		}
		if len(r.target.seenHeaders()) != 1 {
			t.Fatalf("target saw %d streams, want 1", len(r.target.seenHeaders()))
		}
	})
}

// Shutdown with nothing open returns at once; Close after it is a no-op.
func TestShutdownIdleIsImmediate(t *testing.T) {
	r := startRig(t, rigOptions{connections: 1})
	start := time.Now()
	if err := r.hub.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.edge.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
	if err := r.hub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.edge.Close(); err != nil {
		t.Fatal(err)
	}
}

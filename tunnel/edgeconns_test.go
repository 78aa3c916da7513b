package tunnel

import (
	"crypto/tls"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// dialSet connects one raw connection of a tunnel set, authenticated.
func dialSet(t *testing.T, hubPort int, set setPlace) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hubPort), edgeTLSConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := edgeHandshake(c, "edge-1", "s3cret-edge-1", DefaultWindow, set, ourCaps); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return c
}

// An edge with three connections spreads streams over all three, with ids
// unique across them, and both sides report the set.
func TestTunnelSetSpreadsStreams(t *testing.T) {
	r := startRig(t, rigOptions{connections: 3})
	// The edge may count a connection as soon as the hub's proof arrives,
	// a moment before the hub has registered it: both get a little time.
	testutil.Eventually(t, 5*time.Second, "hub status: one edge with 3 connections", func() bool {
		e := r.hub.Status().ConnectedEdges
		return len(e) == 1 && e[0].Connections == 3
	})
	testutil.Eventually(t, 5*time.Second, "edge status: 3 connections", func() bool { return r.edge.Status().Connections == 3 })
	from := len(r.hubEvents.snapshot())
	const streams = 9
	for i := 0; i < streams; i++ {
		c := r.dial(t)
		msg := fmt.Sprintf("stream %d", i)
		c.Write([]byte(msg))
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("stream %d echoed %q, %v", i, got, err)
		}
	}
	ids := map[uint32]bool{}
	index := map[uint32]int{} // streams per connection: id-1 mod 3 is its index
	for len(ids) < streams {
		ev, i := r.hubEvents.wait(t, from, 5*time.Second, named(EventStreamOpened))
		from = i + 1
		id := ev.Data.(StreamEvent).StreamID
		if ids[id] {
			t.Fatalf("stream id %d opened twice", id)
		}
		ids[id] = true
		index[(id-1)%3]++
	}
	for k := uint32(0); k < 3; k++ {
		if index[k] != streams/3 {
			t.Fatalf("streams per connection %v, want %d on each of 3", index, streams/3)
		}
	}
}

// When one connection of the set is lost, the edge ends the others and
// connects a new set: one tunnelDisconnected, one edgeDisconnected, and
// traffic flows again over a full set.
func TestTunnelSetReconnectsAsAWhole(t *testing.T) {
	r := startRig(t, rigOptions{connections: 2})
	// The rig is up when the edge has its set; the hub may register the
	// second member a moment later.
	testutil.Eventually(t, 5*time.Second, "the set on the hub", func() bool {
		e := r.hub.Status().ConnectedEdges
		return len(e) == 1 && e[0].Connections == 2
	})
	hubFrom, edgeFrom := len(r.hubEvents.snapshot()), len(r.edgeEvts.snapshot())
	r.hub.mu.Lock()
	victim := r.hub.edges["edge-1"].conns[1]
	r.hub.mu.Unlock()
	_ = victim.(*session).conn.Close() // the connection breaks, no GOAWAY

	_, i := r.edgeEvts.wait(t, edgeFrom, 5*time.Second, named(EventTunnelDisconnected))
	r.edgeEvts.wait(t, i+1, 10*time.Second, named(EventTunnelConnected))
	_, i = r.hubEvents.wait(t, hubFrom, 5*time.Second, named(EventEdgeDisconnected))
	r.hubEvents.wait(t, i+1, 10*time.Second, named(EventEdgeConnected))
	testutil.Eventually(t, 5*time.Second, "a full set on the hub", func() bool {
		e := r.hub.Status().ConnectedEdges
		return len(e) == 1 && e[0].Connections == 2
	})
	count := func(evs []Event, name string) int {
		n := 0
		for _, e := range evs {
			if e.Name == name {
				n++
			}
		}
		return n
	}
	if n := count(r.hubEvents.snapshot()[hubFrom:], EventEdgeDisconnected); n != 1 {
		t.Fatalf("%d edgeDisconnected for one lost connection, want 1", n)
	}
	if n := count(r.edgeEvts.snapshot()[edgeFrom:], EventTunnelDisconnected); n != 1 {
		t.Fatalf("%d tunnelDisconnected for one lost connection, want 1", n)
	}
	c := r.dial(t)
	c.Write([]byte("again"))
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "again" {
		t.Fatalf("after reconnecting: %q, %v", got, err)
	}
}

// The hub takes each place of a set once, and only in a set of the size the
// edge announced first; other connections are closed and change nothing.
func TestHubRejectsConflictingSetMembers(t *testing.T) {
	events := newEventLog()
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2",
		Logger: testLogger(t), Events: events.sink}, []EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	const id = 0xC0FFEE
	dialSet(t, hub.Port(), setPlace{ID: id, Index: 0, Size: 2})
	events.wait(t, 0, 5*time.Second, named(EventEdgeConnected))
	for _, bad := range []setPlace{{ID: id, Index: 0, Size: 2}, {ID: id, Index: 1, Size: 3}} {
		c := dialSet(t, hub.Port(), bad)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil { // a GOAWAY, then the end
			t.Fatalf("set member %+v was not closed: %v", bad, err)
		}
	}
	dialSet(t, hub.Port(), setPlace{ID: id, Index: 1, Size: 2})
	testutil.Eventually(t, 5*time.Second, "the second member", func() bool {
		e := hub.Status().ConnectedEdges
		return len(e) == 1 && e[0].Connections == 2
	})
	for _, e := range events.snapshot() {
		if e.Name == EventEdgeDisconnected {
			t.Fatalf("a rejected member disconnected the edge: %+v", e)
		}
	}
}

package tunnel

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// 500 idle connections on the tunnel port must not keep a real edge out.
func TestIdleFloodDoesNotLockOutEdge(t *testing.T) {
	events := newEventLog()
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Logger: testLogger(t), Events: events.sink},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < 500; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hub.Port()))
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	testutil.Eventually(t, 5*time.Second, "the flood to be accepted", func() bool { return hub.Status().PendingHandshakes >= DefaultMaxPendingHandshakes-1 })
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hub.Port(), EdgeID: "edge-1", Secret: "s3cret",
		ListenHost: "127.0.0.1", ListenPorts: []int{testutil.FreePort(t, "127.0.0.1", "127.0.0.2")}, StunInterval: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	events.wait(t, 0, 10*time.Second, named(EventEdgeConnected))
	if p := hub.Status().PendingHandshakes; p > DefaultMaxPendingHandshakes {
		t.Fatalf("%d pending handshakes, cap %d", p, DefaultMaxPendingHandshakes)
	}
}

// The edge refuses clients beyond MaxStreams; the tunnel stays up.
func TestEdgeStreamLimit(t *testing.T) {
	r := startRig(t, rigOptions{tuning: Tuning{MaxStreams: 2}})
	held := []*net.TCPConn{r.dial(t), r.dial(t)}
	for _, c := range held {
		c.Write([]byte("x"))
	}
	testutil.Eventually(t, 5*time.Second, "two streams", func() bool { return hubStreams(r.hub) == 2 })
	expectRefused(t, r.edgeAddr)
	held[0].CloseWrite()
	if got, _ := io.ReadAll(held[0]); string(got) != "x" {
		t.Fatalf("held stream got %q", got)
	}
	if n := len(r.hub.Status().ConnectedEdges); n != 1 {
		t.Fatal("tunnel dropped")
	}
}

// An edge that opens more streams than the hub allows breaks the protocol.
func TestHubStreamLimitIsProtocolError(t *testing.T) {
	events := newEventLog()
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Tuning: Tuning{MaxStreams: 2},
		Logger: testLogger(t), Events: events.sink}, []EdgeCredential{{ID: "evil", Secret: "e"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	tg := startTarget(t, func(_ string, c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	raw := rawEdge(t, hub.Port(), "evil", "e")
	fw := newFrameWriter(raw)
	hdr := []byte(fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 1000 %d\r\n", tg.port))
	for id := uint32(1); id <= 3; id++ {
		fw.WriteFrame(id, frameOpen, hdr)
	}
	ev, _ := events.wait(t, 0, 5*time.Second, named(EventEdgeDisconnected))
	if d := ev.Data.(EdgeDisconnectedEvent); !strings.Contains(d.Reason, "limit of 2 concurrent streams") {
		t.Fatalf("reason = %q", d.Reason)
	}
}

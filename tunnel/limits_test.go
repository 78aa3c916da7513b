package tunnel

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
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

func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newFailureLimiter(3, 0.5)
	l.now = func() time.Time { return now }
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	for i := 0; i < 3; i++ {
		if !l.allow(a) {
			t.Fatalf("refused after %d failures, burst 3", i)
		}
		l.fail(a)
	}
	if l.allow(a) {
		t.Fatal("allowed after the burst was used up")
	}
	if !l.allow(b) {
		t.Fatal("another address was refused")
	}
	now = now.Add(2 * time.Second) // one token back at 0.5/s
	if !l.allow(a) {
		t.Fatal("not allowed again after the refill time")
	}
	l.fail(a)
	if l.allow(a) {
		t.Fatal("a failure after the refill did not take the token")
	}
	now = now.Add(time.Minute)
	if !l.allow(a) || len(l.buckets) != 0 {
		t.Fatalf("a full bucket is not forgotten: %d buckets", len(l.buckets))
	}
}

// Repeated wrong secrets from one address get it refused before TLS.
func TestFailedHandshakesAreThrottled(t *testing.T) {
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", Logger: testLogger(t)},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	attempt := func() error {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hub.Port()), edgeTLSConfig("127.0.0.1"))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = edgeHandshake(c, "edge-1", "guess", DefaultWindow, TunnelSet{Size: 1})
		return err
	}
	for i := 0; i < failureBurst; i++ {
		if err := attempt(); err == nil || !strings.Contains(err.Error(), "authentication failed") {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	err = attempt()
	if err == nil || strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("attempt beyond the burst got as far as authentication: %v", err)
	}
	if r := hub.Status().RejectedHandshakes; r != failureBurst+1 {
		t.Fatalf("rejectedHandshakes = %d, want %d", r, failureBurst+1)
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
	extra := r.dial(t)
	expectClosed(t, extra)
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
	fw := NewFrameWriter(raw)
	hdr := []byte(fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 1000 %d\r\n", tg.port))
	for id := uint32(1); id <= 3; id++ {
		fw.WriteFrame(id, FrameOpen, hdr)
	}
	ev, _ := events.wait(t, 0, 5*time.Second, named(EventEdgeDisconnected))
	if d := ev.Data.(EdgeDisconnectedEvent); !strings.Contains(d.Reason, "limit of 2 concurrent streams") {
		t.Fatalf("reason = %q", d.Reason)
	}
}

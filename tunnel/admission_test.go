package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The flood of the issue report, all from 127.0.0.1 like the edge: 500 idle
// connections, 50 that send garbage, 50 that finish TLS and then send
// garbage. Every TLS handshake completes, and the real edge from the same
// address connects within 2 s and carries 64 KiB intact, all while the flood
// is still connected.
func TestJunkFloodFromTheEdgesAddressDoesNotLockItOut(t *testing.T) {
	hubEvents := newEventLog()
	tg := startTarget(t, echoHandler)
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Logger: testLogger(t), Events: hubEvents.sink},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	hubAddr := fmt.Sprintf("127.0.0.1:%d", hub.Port())

	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	junk := func() []byte {
		b := make([]byte, 4<<10)
		rand.Read(b)
		return b
	}
	for i := 0; i < 500; i++ {
		c, err := net.Dial("tcp", hubAddr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", hubAddr)
		if err != nil {
			t.Fatalf("garbage connection %d: %v", i, err)
		}
		flood = append(flood, c)
		c.Write(junk()) // the hub may have closed it already: that is its right
	}
	handshakes := 0
	for i := 0; i < 50; i++ {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", hubAddr, edgeTLSConfig("127.0.0.1"))
		if err != nil {
			t.Errorf("TLS handshake %d after the garbage: %v", i, err)
			continue
		}
		handshakes++
		flood = append(flood, c)
		c.Write(junk())
	}
	if handshakes != 50 {
		t.Fatalf("%d of 50 TLS handshakes completed: the hub refused an address before TLS", handshakes)
	}

	edgeEvents := newEventLog()
	start := time.Now()
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hub.Port(), EdgeID: "edge-1", Secret: "s3cret",
		ListenHost: "127.0.0.1", ListenPorts: []int{tg.port}, StunInterval: -1, Connections: 1,
		Logger: testLogger(t), Events: edgeEvents.sink})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	edgeEvents.wait(t, 0, 2*time.Second, named(EventTunnelConnected))
	t.Logf("edge connected %v after start, beside %d flood connections", time.Since(start).Round(time.Millisecond), len(flood))

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tg.port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("echo through the tunnel: %v (%d bytes)", err, len(got))
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo of 64 KiB came back different (%d bytes)", len(got))
	}
	if p := hub.Status().PendingHandshakes; p > DefaultMaxPendingHandshakes {
		t.Fatalf("%d pending handshakes, cap %d", p, DefaultMaxPendingHandshakes)
	}
}

// fastProofLimits throttle wrong proofs quickly enough for a test to see the
// rate: one address gets 10 free guesses, then 150 per second.
var fastProofLimits = proofLimits{
	perEdge:     rateLimit{burst: 20, perSecond: 400},
	perAddrEdge: rateLimit{burst: 10, perSecond: 150},
	maxDebt:     64,
	maxPenalty:  5 * time.Second,
}

// An attacker guessing the secret of an edge id, 8 guesses in flight, gets
// through 1 000 wrong proofs no faster than the throttle allows, while the
// real edge with that id, from the same address, proves itself in the middle
// of it without waiting.
func TestWrongProofsAreThrottledButNotTheRealEdge(t *testing.T) {
	hub, err := startHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Logger: testLogger(t)},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}}, fastProofLimits)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	hubAddr := fmt.Sprintf("127.0.0.1:%d", hub.Port())
	handshake := func(secret string) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", hubAddr, edgeTLSConfig("127.0.0.1"))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = edgeHandshake(c, "edge-1", secret, DefaultWindow, setPlace{Size: 1}, ourCaps)
		return err
	}

	const guesses, inFlight = 1000, 8
	var next, wrong atomic.Int64
	var realTook atomic.Int64
	realDone := make(chan error, 1)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < inFlight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > guesses {
					return
				}
				if i == guesses/2 {
					go func() {
						t0 := time.Now()
						err := handshake("s3cret")
						realTook.Store(int64(time.Since(t0)))
						realDone <- err
					}()
				}
				err := handshake(fmt.Sprintf("guess-%d", i))
				if !errors.Is(err, ErrAuthFailed) && (err == nil || !bytes.Contains([]byte(err.Error()), []byte("authentication failed"))) {
					t.Errorf("guess %d: %v", i, err)
					return
				}
				wrong.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err := <-realDone; err != nil {
		t.Fatalf("the real edge was refused during the attack: %v", err)
	}
	realTime := time.Duration(realTook.Load())
	rate := float64(wrong.Load()) / took.Seconds()
	t.Logf("%d wrong proofs in %v (%.0f/s, limit %.0f/s after %v free); the real edge proved itself in %v",
		wrong.Load(), took.Round(time.Millisecond), rate, fastProofLimits.perAddrEdge.perSecond, fastProofLimits.perAddrEdge.burst, realTime.Round(time.Millisecond))
	if wrong.Load() != guesses {
		t.Fatalf("%d wrong proofs answered, want %d", wrong.Load(), guesses)
	}
	minTook := time.Duration((guesses - fastProofLimits.perAddrEdge.burst) / fastProofLimits.perAddrEdge.perSecond * float64(time.Second))
	if took < minTook*9/10 {
		t.Fatalf("1000 wrong proofs took %v, the throttle allows no less than %v", took, minTook)
	}
	if realTime > time.Second {
		t.Fatalf("the real edge waited %v in the middle of the attack", realTime)
	}
	if n := hub.Status().AuthFailures; n != guesses {
		t.Fatalf("authFailures = %d, want %d", n, guesses)
	}
}

// The throttle's arithmetic on a fake clock.
func TestProofThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	th := newProofThrottle(proofLimits{
		perEdge:     rateLimit{burst: 100, perSecond: 100},
		perAddrEdge: rateLimit{burst: 3, perSecond: 1},
		maxDebt:     2,
		maxPenalty:  10 * time.Second,
	})
	th.now = func() time.Time { return now }
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("2001:db8::1")
	ctx := context.Background()
	try := func(addr netip.Addr, id string, known, ok bool) time.Duration {
		t.Helper()
		c, err := th.enter(ctx, addr, id, known)
		if err != nil {
			t.Fatalf("enter: %v", err)
		}
		return c.settle(ok)
	}
	for i := 0; i < 3; i++ {
		if hold := try(a, "e", true, false); hold != 0 {
			t.Fatalf("wrong proof %d within the burst held %v", i, hold)
		}
	}
	if hold := try(a, "e", true, false); hold != time.Second {
		t.Fatalf("first wrong proof beyond the burst held %v, want 1s", hold)
	}
	if hold := try(a, "e", true, true); hold != 0 {
		t.Fatalf("a correct proof was held %v", hold)
	}
	if hold := try(a, "e", true, false); hold != 2*time.Second {
		t.Fatalf("second wrong proof beyond the burst held %v, want 2s (a correct proof must give its token back)", hold)
	}
	// Two tokens in debt: the next proof for (a, e) waits before it is checked.
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := th.enter(short, a, "e", true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a proof beyond the debt limit was let in: %v", err)
	}
	// Another address, or another id, is not held up by (a, e).
	if hold := try(b, "e", true, false); hold != 0 {
		t.Fatalf("another address was held %v", hold)
	}
	if hold := try(a, "f", true, true); hold != 0 {
		t.Fatalf("another id was held %v", hold)
	}
	now = now.Add(time.Second) // one token back
	if hold := try(a, "e", true, false); hold != 2*time.Second {
		t.Fatalf("after a second of refill a wrong proof held %v, want 2s", hold)
	}
	// Unknown ids share one bucket, so guessing ids cannot grow the tables.
	for i := 0; i < 50; i++ {
		try(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), fmt.Sprintf("no-such-edge-%d", i), false, false)
	}
	if len(th.perEdge) != 3 { // e, f and the one of all unknown ids
		t.Fatalf("%d per-edge buckets after guessing 50 unknown ids, want 3", len(th.perEdge))
	}
	if th.failed() != 3+1+1+1+1+50 {
		t.Fatalf("failed() = %d", th.failed())
	}
	// Full buckets are forgotten once the table is large.
	now = now.Add(time.Hour)
	for i := 0; i < throttleSweepAt; i++ {
		th.perAddr[addrEdge{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "e"}] = &tokenBucket{lim: &th.lim.perAddrEdge, tokens: 3, last: now}
	}
	try(a, "g", true, true)
	if len(th.perAddr) != 1 {
		t.Fatalf("%d per-address buckets after a sweep, want 1", len(th.perAddr))
	}
}

//go:build linux

package tunnel

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// udpBalance is what became of the datagrams a client sent: delivered to
// the target, dropped by the edge (udpDatagramsDropped, the kernel's drops
// at its socket included), by the hub on the way to the target, or by the
// kernel at the target's socket. On loopback that is every datagram.
func (r *udpRig) udpBalance(t testing.TB) (got, edge, hub, target uint64) {
	t.Helper()
	r.target.mu.Lock()
	got = uint64(r.target.got)
	r.target.mu.Unlock()
	edge = r.edge.Status().UDPDatagramsDropped
	r.hub.mu.Lock()
	for _, e := range r.hub.edges {
		hub += e.flows.droppedToTarget.Load()
	}
	r.hub.mu.Unlock()
	target, ok := socketDrops(r.target.pc)
	if !ok {
		t.Fatal("the target socket's drop count is unknown")
	}
	return got, edge, hub, target
}

func (r *udpRig) udpAccounted(t testing.TB) uint64 {
	got, edge, hub, target := r.udpBalance(t)
	return got + edge + hub + target
}

// waitAccounted waits until sent more datagrams than at base are accounted
// for, and returns the new base.
func (r *udpRig) waitAccounted(t testing.TB, base, sent uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := r.udpAccounted(t)
		if n == base+sent {
			return n
		}
		if n > base+sent || time.Now().After(deadline) {
			got, edge, hub, target := r.udpBalance(t)
			t.Fatalf("%d datagrams sent, %d accounted for: %d delivered, dropped %d by the edge, %d by the hub, %d at the target (before: %d)",
				sent, n-base, got, edge, hub, target, base)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func flood(t testing.TB, c *net.UDPConn, n int) uint64 {
	t.Helper()
	p := make([]byte, 1200)
	var sent uint64
	for i := 0; i < n; i++ {
		if _, err := c.Write(p); err == nil {
			sent++
		}
	}
	return sent
}

// A UDP flood beside a busy TCP stream gets no more than UDP's budget: the
// edge's reader waits, the kernel drops what its socket cannot hold, and
// every datagram is either delivered or counted dropped. Beside idle
// streams the reader does not wait.
func TestUDPFloodBesideBusyStreamIsCapped(t *testing.T) {
	tcp := startTarget(t, func(_ string, c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	r := startUDPRig(t, udpRigOptions{mode: UDPProxyNone, tcpPorts: []int{tcp.port}})
	waitFor(t, 5*time.Second, "the TCP port bound", func() bool { return len(r.edge.Status().ListenPorts) > 0 })
	c := r.client(t)
	roundTrip(t, c, []byte("open the flow"))
	time.Sleep(100 * time.Millisecond)
	base := r.udpAccounted(t)

	// The busy stream.
	sc, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.port)))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				sc.Close()
				return
			default:
			}
			if _, err := sc.Write(buf); err != nil {
				return
			}
		}
	}()
	waitFor(t, 10*time.Second, "the stream moving", func() bool { return r.edge.traffic.sent.Load() > 4<<20 })

	b := r.edge.udp.budget
	b.mu.Lock()
	p0 := b.pauses
	b.mu.Unlock()
	sent := flood(t, c, 30000)
	time.Sleep(50 * time.Millisecond)
	b.mu.Lock()
	p1 := b.pauses
	b.mu.Unlock()
	close(stop)
	<-stopped
	if p1 == p0 {
		t.Errorf("the edge's reader never waited for the budget during a flood beside a busy stream")
	}
	// With the stream done, the budget opens and the socket's backlog drains.
	next := r.waitAccounted(t, base, sent)
	got, edge, _, _ := r.udpBalance(t)
	t.Logf("beside the stream: %d sent, %d delivered, %d dropped at the edge", sent, got, edge)
	if edge == 0 {
		t.Errorf("nothing dropped at the edge of a flood of %d datagrams over the budget", sent)
	}

	// Idle streams: no cap.
	waitFor(t, 10*time.Second, "the stream's bytes settled", func() bool {
		n := r.edge.traffic.sent.Load()
		time.Sleep(2 * udpBusyWindow)
		return r.edge.traffic.sent.Load() == n
	})
	b.mu.Lock()
	p0 = b.pauses
	b.mu.Unlock()
	sent = flood(t, c, 30000)
	r.waitAccounted(t, next, sent)
	b.mu.Lock()
	p1 = b.pauses
	b.mu.Unlock()
	if p1 != p0 {
		t.Errorf("the edge's reader waited %d times for the budget beside idle streams", p1-p0)
	}
}

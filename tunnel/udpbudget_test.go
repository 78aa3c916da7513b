package tunnel

import (
	"math"
	"testing"
	"time"
)

// budgetSim drives a udpBudget on a clock of its own: streams moving
// streamRate bytes a second, and one reader that takes readEvery per
// datagram and sleeps what charge says.
type budgetSim struct {
	b          *udpBudget
	now        time.Time
	bytes      float64 // the streams' bytes so far
	streamRate float64 // bytes per second; 0: idle streams
}

func newBudgetSim(streamRate float64) *budgetSim {
	s := &budgetSim{streamRate: streamRate, now: time.Unix(1000, 0)}
	s.b = newUDPBudgetClock(func() uint64 { return uint64(s.bytes) }, func() time.Time { return s.now })
	return s
}

func (s *budgetSim) advance(d time.Duration) {
	s.now = s.now.Add(d)
	s.bytes += s.streamRate * d.Seconds()
}

// run reads datagrams of size bytes for d (a read every readEvery, or less
// often when the budget makes the reader wait) and returns how many.
func (s *budgetSim) run(d time.Duration, size int, readEvery time.Duration) int {
	end := s.now.Add(d)
	n := 0
	for s.now.Before(end) {
		s.advance(readEvery)
		n++
		s.advance(s.b.charge(size))
	}
	return n
}

func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol*want {
		t.Errorf("%s: %.0f, want %.0f ± %.0f%%", what, got, want, tol*100)
	}
}

// While streams move data, the edge's readers take no more than UDP's share
// of the tunnel (by charged bytes), and at least the floor; while they are
// idle, all they can.
func TestUDPBudgetCapsOnlyBesideBusyStreams(t *testing.T) {
	const size = 1200
	readEvery := 10 * time.Microsecond // a read: up to 100 000 datagrams a second

	idle := newBudgetSim(0)
	if n := idle.run(time.Second, size, readEvery); n != 100000 || idle.b.pauses != 0 {
		t.Errorf("idle streams: %d datagrams read in a second (want all 100000), %d waits", n, idle.b.pauses)
	}

	busy := newBudgetSim(500e6) // 500 MB/s of streams
	busy.run(200*time.Millisecond, size, readEvery)
	n := busy.run(time.Second, size, readEvery)
	within(t, "busy streams: datagrams a second", float64(n), 500e6*udpShare/(1-udpShare)/datagramCost(size), 0.05)
	if busy.b.pauses == 0 {
		t.Error("busy streams: the reader never waited")
	}

	slow := newBudgetSim(1e6) // busy but slow streams: the floor
	slow.run(200*time.Millisecond, size, readEvery)
	n = slow.run(time.Second, size, readEvery)
	within(t, "slow streams: datagrams a second", float64(n), udpFloor/datagramCost(size), 0.05)

	// The streams stop: after udpBusyWindow the readers are free again.
	busy.streamRate = 0
	busy.run(udpBusyWindow+udpSampleEvery, size, readEvery)
	p := busy.b.pauses
	if n := busy.run(time.Second, size, readEvery); n != 100000 || busy.b.pauses != p {
		t.Errorf("streams stopped: %d datagrams read in a second (want all 100000), %d waits", n, busy.b.pauses-p)
	}
	// And they start again: capped at once.
	busy.streamRate = 500e6
	busy.run(udpSampleEvery, size, readEvery)
	if n := busy.run(100*time.Millisecond, size, readEvery); n > 5000 {
		t.Errorf("streams busy again: %d datagrams read in 100 ms", n)
	}
}

// Stream bytes seen first after a long silence of UDP may be old: they do
// not cap the next datagrams until a recent sample shows the streams moving.
func TestUDPBudgetOldStreamBytesAreNotBusy(t *testing.T) {
	s := newBudgetSim(500e6)
	s.b.charge(1200)
	s.advance(time.Second) // the streams moved, then stopped; no datagram meanwhile
	s.streamRate = 0
	s.advance(time.Second)
	if n := s.run(time.Second, 1200, 10*time.Microsecond); n != 100000 || s.b.pauses != 0 {
		t.Errorf("%d datagrams read in a second (want all 100000), %d waits", n, s.b.pauses)
	}
}

// What a charge costs a reader beside idle streams (the UDP rate row's case).
func BenchmarkUDPBudgetChargeIdle(b *testing.B) {
	var bytes uint64
	budget := newUDPBudget(func() uint64 { return bytes })
	for b.Loop() {
		budget.charge(1200)
	}
}

package tunnel

import (
	"math"
	"sync"
	"time"
)

// UDP's share of the edge's tunnel while TCP streams are busy (CONTRACT
// section 9: a UDP flood leaves TCP streams' throughput within 10% of what
// they get alone).
//
// What a datagram costs the tunnel is mostly per datagram, not per byte: a
// system call and a frame at each hop (the edge's read, the seal, the hub's
// open and its write to the target). So each datagram is charged its length
// plus udpDatagramCharge, in the same units as the streams' payload bytes.
// While the edge's streams moved data (either way) within udpBusyWindow,
// UDP may take udpShare of the tunnel by that measure — udpShare/(1 −
// udpShare) of the streams' recent rate — and never less than udpFloor
// (small UDP, DNS say, keeps working beside bulk TCP). While the streams
// are idle UDP is not limited here: it gets the whole tunnel, as far as the
// session's bounded queue lets it (flow.go).
//
// The limit is applied by the readers of the edge's UDP ports, before any
// other work: a reader that has taken more than its budget (one datagram
// always goes through) does not read again until the budget has room. The
// datagrams meanwhile wait in the socket's buffer, and those it cannot hold
// the kernel drops, at no cost to the edge; the edge counts those drops
// too (the socket's drop count, udpdrops_linux.go). The budget is shared by
// all of an edge's UDP ports; a port with one datagram now and then does
// not wait behind a flood to another, since a datagram read is always sent
// and the reader that then owes the budget is the one that sleeps.
const (
	// udpDatagramCharge is what a datagram costs beyond its bytes.
	udpDatagramCharge = 4 << 10
	// udpShare is UDP's share of the tunnel while streams are busy.
	udpShare = 0.05
	// udpFloor is UDP's budget, in charged bytes per second, while streams
	// are busy but slow: about 800 datagrams of 1 200 bytes a second, or
	// 1 000 small ones.
	udpFloor = 4 << 20
	// udpBusyWindow is how recently the streams must have moved data to
	// count as busy.
	udpBusyWindow = 100 * time.Millisecond
	// udpSampleEvery is how often the budget samples the streams' bytes.
	udpSampleEvery = 10 * time.Millisecond
	// udpRateTau is the time constant of the streams' rate it averages.
	udpRateTau = 100 * time.Millisecond
	// udpBurst is how much of the budget may gather (in time at its rate).
	udpBurst = 20 * time.Millisecond
	// udpMinPause is the least debt (in time at the rate) a reader sleeps
	// off; less is left for the next datagram, so that readers sleep in
	// steps the timers keep.
	udpMinPause = time.Millisecond
)

// udpBudget is the budget of an edge's UDP ports.
type udpBudget struct {
	streamBytes func() uint64 // the streams' payload bytes so far, both ways
	now         func() time.Time

	mu      sync.Mutex
	start   time.Time
	sampled time.Duration // since start: the last sample of streamBytes
	bytes   uint64        // streamBytes then
	active  time.Duration // since start: when streamBytes last grew
	rate    float64       // the streams' recent rate, bytes per second
	filled  time.Duration // since start: when tokens were last topped up
	tokens  float64       // charged bytes UDP may still take; < 0: owed
	busy    bool          // the last charge found the streams busy
	pauses  uint64        // the charges that made a reader wait
}

func newUDPBudget(streamBytes func() uint64) *udpBudget {
	return newUDPBudgetClock(streamBytes, time.Now)
}

// newUDPBudgetClock is newUDPBudget on the clock now.
func newUDPBudgetClock(streamBytes func() uint64, now func() time.Time) *udpBudget {
	b := &udpBudget{streamBytes: streamBytes, now: now}
	b.start = b.now()
	b.bytes = streamBytes()
	b.active = -udpBusyWindow
	return b
}

// datagramCost is what a datagram of n bytes is charged.
func datagramCost(n int) float64 { return float64(n + udpDatagramCharge) }

// charge takes the cost of a datagram of n bytes, read and sent just now,
// from the budget, and returns how long its reader should wait before it
// reads again (0: at once).
func (b *udpBudget) charge(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now().Sub(b.start)
	if dt := now - b.sampled; dt >= udpSampleEvery {
		cur := b.streamBytes()
		// Growth since a sample older than the window may be old: it counts
		// once a recent sample shows it too.
		if cur != b.bytes && dt < udpBusyWindow {
			b.active = now
		}
		inst := float64(cur-b.bytes) / dt.Seconds()
		a := 1 - math.Exp(-float64(dt)/float64(udpRateTau))
		b.rate += a * (inst - b.rate)
		b.bytes, b.sampled = cur, now
	}
	if now-b.active >= udpBusyWindow {
		// Idle streams: UDP has the tunnel. The budget is full when they
		// start again.
		b.busy, b.tokens, b.filled = false, math.Inf(1), now
		return 0
	}
	rate := b.limit()
	burst := rate * udpBurst.Seconds()
	if !b.busy {
		b.busy, b.tokens = true, burst
	} else if dt := now - b.filled; dt > 0 {
		b.tokens = min(burst, b.tokens+rate*dt.Seconds())
	}
	b.filled = now
	b.tokens -= datagramCost(n)
	if b.tokens >= -rate*udpMinPause.Seconds() {
		return 0
	}
	b.pauses++
	return time.Duration(-b.tokens / rate * float64(time.Second))
}

// limit is UDP's rate while the streams are busy, in charged bytes per
// second; b.mu is held.
func (b *udpBudget) limit() float64 {
	return max(udpFloor, b.rate*udpShare/(1-udpShare))
}

package tunnel

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Admission does not look at addresses before TLS: junk (idle connections,
// garbage, failed TLS handshakes, malformed HELLOs) costs its sender a
// pending-handshake slot under the 10 s deadline and nothing else, and it
// never counts against an address, since one address is often many parties
// (SNAT, a load balancer, a Kubernetes Service). What is throttled is the
// one thing an attacker gains from: checking a guessed secret. Each edge id
// has a token bucket of wrong proofs, and so has each (address, edge id).
//
//   - A proof is checked once a token of both buckets is taken; a bucket may
//     run into debt up to maxDebt, beyond which further proofs for that key
//     wait before they are checked. However many connections an attacker
//     opens, wrong guesses for one id are checked at the buckets' rate.
//   - A correct proof gives its tokens back: the real edge, which proves
//     itself on the first try, never waits while fewer than maxDebt guesses
//     for its id are outstanding.
//   - A wrong proof keeps them, and its answer is held back until the debt
//     it left is paid off: the attacker's connection is the one that waits.

// Defaults of the proof throttle.
var defaultProofLimits = proofLimits{
	perEdge:     rateLimit{burst: 30, perSecond: 5},
	perAddrEdge: rateLimit{burst: 10, perSecond: 1},
	maxDebt:     64,
	maxPenalty:  5 * time.Second,
}

const (
	// throttleSweepAt is the bucket count at which full buckets are dropped.
	throttleSweepAt = 4096
	// maxAddrBuckets bounds the per-address buckets; beyond it (after a
	// sweep) new addresses share the per-edge buckets only.
	maxAddrBuckets = 1 << 16
	// unknownEdge is the bucket key of every edge id that is not allowed,
	// so that guessing ids cannot grow the tables.
	unknownEdge = "\x00unknown"
)

// rateLimit is a token bucket's size and refill rate.
type rateLimit struct {
	burst     float64
	perSecond float64
}

// proofLimits configure a proofThrottle.
type proofLimits struct {
	perEdge     rateLimit
	perAddrEdge rateLimit
	// maxDebt is how far a bucket may go below zero before proofs wait.
	maxDebt float64
	// maxPenalty caps how long the answer to one wrong proof is held.
	maxPenalty time.Duration
}

// proofThrottle throttles the checking of edge proofs (see above).
type proofThrottle struct {
	lim proofLimits
	now func() time.Time

	mu       sync.Mutex
	perEdge  map[string]*tokenBucket
	perAddr  map[addrEdge]*tokenBucket
	failures uint64
}

type addrEdge struct {
	addr netip.Addr
	edge string
}

// tokenBucket holds tokens, which may go negative (debt), and when it was
// last brought up to date.
type tokenBucket struct {
	lim    *rateLimit
	tokens float64
	last   time.Time
}

func newProofThrottle(lim proofLimits) *proofThrottle {
	return &proofThrottle{lim: lim, now: time.Now, perEdge: map[string]*tokenBucket{}, perAddr: map[addrEdge]*tokenBucket{}}
}

// refill brings b up to now and reports whether it is full.
func (b *tokenBucket) refill(now time.Time) bool {
	b.tokens = min(b.lim.burst, b.tokens+now.Sub(b.last).Seconds()*b.lim.perSecond)
	b.last = now
	return b.tokens >= b.lim.burst
}

// until is how long b needs to reach level tokens.
func (b *tokenBucket) until(level float64) time.Duration {
	if b.tokens >= level {
		return 0
	}
	return time.Duration((level - b.tokens) / b.lim.perSecond * float64(time.Second))
}

// proofCharge is the tokens one checked proof took.
type proofCharge struct {
	t       *proofThrottle
	buckets []*tokenBucket
}

// enter waits until a proof for edge from addr may be checked and takes its
// tokens; it fails when ctx ends first. known tells whether edge is allowed:
// unknown ids share one bucket.
func (t *proofThrottle) enter(ctx context.Context, addr netip.Addr, edge string, known bool) (*proofCharge, error) {
	if !known {
		edge = unknownEdge
	}
	for {
		t.mu.Lock()
		now := t.now()
		buckets := t.bucketsLocked(addr, edge, now)
		var wait time.Duration
		for _, b := range buckets {
			b.refill(now)
			wait = max(wait, b.until(1-t.lim.maxDebt))
		}
		if wait == 0 {
			for _, b := range buckets {
				b.tokens--
			}
			t.mu.Unlock()
			return &proofCharge{t: t, buckets: buckets}, nil
		}
		t.mu.Unlock()
		if err := sleepCtx(ctx, max(wait, time.Millisecond)); err != nil {
			return nil, err
		}
	}
}

// bucketsLocked returns the buckets of (addr, edge), made when missing.
func (t *proofThrottle) bucketsLocked(addr netip.Addr, edge string, now time.Time) []*tokenBucket {
	e := t.perEdge[edge]
	if e == nil {
		if len(t.perEdge) >= throttleSweepAt {
			sweep(t.perEdge, now)
		}
		e = &tokenBucket{lim: &t.lim.perEdge, tokens: t.lim.perEdge.burst, last: now}
		t.perEdge[edge] = e
	}
	k := addrEdge{addr, edge}
	a := t.perAddr[k]
	if a == nil {
		if len(t.perAddr) >= throttleSweepAt {
			sweep(t.perAddr, now)
		}
		if len(t.perAddr) >= maxAddrBuckets {
			return []*tokenBucket{e}
		}
		a = &tokenBucket{lim: &t.lim.perAddrEdge, tokens: t.lim.perAddrEdge.burst, last: now}
		t.perAddr[k] = a
	}
	return []*tokenBucket{e, a}
}

// sweep drops the buckets that are full again: they hold no memory of failures.
func sweep[K comparable](m map[K]*tokenBucket, now time.Time) {
	for k, b := range m {
		if b.refill(now) {
			delete(m, k)
		}
	}
}

// settle ends the charge of a checked proof. A correct proof gets its tokens
// back; a wrong one keeps them and returns how long its answer is to be held:
// until the debt it left in its buckets is paid off, at most maxPenalty.
func (c *proofCharge) settle(ok bool) time.Duration {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		for _, b := range c.buckets {
			b.tokens = min(b.lim.burst, b.tokens+1)
		}
		return 0
	}
	t.failures++
	now := t.now()
	var hold time.Duration
	for _, b := range c.buckets {
		b.refill(now)
		hold = max(hold, b.until(0))
	}
	return min(hold, t.lim.maxPenalty)
}

// failed counts the wrong proofs checked so far.
func (t *proofThrottle) failed() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures
}

// sleepCtx sleeps for d or until ctx ends, and then returns ctx's error.
func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// remoteIP is the IP of a connection's peer (unmapped), or the zero Addr.
func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

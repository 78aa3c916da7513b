package tunnel

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// failureLimiter slows down addresses that fail authentication: each address
// has a token bucket (burst failures, refilled at rate per second); a failed
// handshake takes a token, and an address without a token is refused before
// TLS until it has earned one back. Timeouts and evictions are not failures,
// so a flood of idle connections never locks out a real edge behind the
// same address.
type failureLimiter struct {
	burst float64
	rate  float64 // tokens per second
	now   func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

const limiterSweepAt = 4096

func newFailureLimiter(burst int, perSecond float64) *failureLimiter {
	return &failureLimiter{burst: float64(burst), rate: perSecond, now: time.Now, buckets: map[netip.Addr]*bucket{}}
}

// refill brings b up to date and reports whether it is full again.
func (l *failureLimiter) refill(b *bucket, now time.Time) bool {
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	return b.tokens >= l.burst
}

// allow reports whether addr may attempt a handshake now.
func (l *failureLimiter) allow(addr netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[addr]
	if b == nil {
		return true
	}
	if l.refill(b, l.now()) {
		delete(l.buckets, addr)
		return true
	}
	return b.tokens >= 1
}

// fail records a failed handshake from addr.
func (l *failureLimiter) fail(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= limiterSweepAt {
			for a, ob := range l.buckets {
				if l.refill(ob, now) {
					delete(l.buckets, a)
				}
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[addr] = b
	}
	l.refill(b, now)
	b.tokens = max(0, b.tokens-1)
}

// remoteIP is the IP of a connection's peer (unmapped), or the zero Addr.
func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

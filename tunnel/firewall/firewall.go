package firewall

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// shardBits gives the number of independently locked parts of the
	// per-IP state, shardCount; an address's shard is a seeded hash of it.
	shardBits  = 5
	shardCount = 1 << shardBits
	// maxIdlePerShard bounds the entries of a shard that have nothing open
	// and are kept only for their rate bucket (shardCount*maxIdlePerShard
	// = 65 536 in all). Past it a sweep first drops the entries whose
	// bucket is full again, then evicts the longest idle ones down to 3/4
	// of the bound: an evicted address starts again with a full bucket, so
	// a flood of distinct (spoofed) addresses can hand a rate-limited
	// client its burst back early, but it cannot grow the state. Entries
	// with open tickets are never evicted; they are bounded by what the
	// edge holds open.
	maxIdlePerShard = 2048
	// minSweep is the shortest idle queue of a shard at which a sweep for
	// full buckets runs.
	minSweep = 64
	// maxFree is the most unused entries a shard keeps for reuse.
	maxFree = 32
)

// Firewall is the live admission state of one edge: the current Policy,
// every open Ticket by client IP, and the rate bucket of each client IP
// that used its rate recently. It is safe for concurrent use. The zero
// value is not usable; call New.
type Firewall struct {
	clock    func() time.Time
	base     time.Time // clock at New; bucket times are nanoseconds since
	seed     uint64
	policy   atomic.Pointer[Policy]
	updateMu sync.Mutex // serializes Update
	refused  atomic.Uint64
	shards   [shardCount]shard
}

type shard struct {
	mu  sync.Mutex
	ips map[netip.Addr]*entry
	// idle holds every entry of ips with nothing open (and maybe some that
	// opened again since), in the order they went idle, for sweep.
	idle    []idleEntry
	sweepAt int // length of idle past which Release sweeps
	free    []*entry
	open    atomic.Int64 // tickets open in the shard, written under mu
	_       [64]byte     // keeps shards' locks off each other's cache lines
}

// entry is the state of one client IP.
type entry struct {
	// tat is the bucket as the time (ns since Firewall.base) at which it
	// is full again, GCRA's theoretical arrival time; 0 when full.
	tat     int64
	open    int     // tickets open
	tickets *Ticket // the open tickets, linked
	queued  bool    // in shard.idle
	gone    bool    // deleted from shard.ips while queued
}

type idleEntry struct {
	addr netip.Addr
	e    *entry
}

// Ticket is one admitted connection or flow, counted open for its client
// IP until Release.
type Ticket struct {
	fw         *Firewall
	s          *shard
	e          *entry
	addr       netip.Addr
	done       atomic.Bool
	onBlock    func() // guarded by s.mu
	blocked    bool   // guarded by s.mu: an Update took onBlock
	prev, next *Ticket
}

// New returns a Firewall with no policy (it admits everyone, and still
// counts what is open). clock is the time source of the rate buckets; nil
// is time.Now.
func New(clock func() time.Time) *Firewall {
	if clock == nil {
		clock = time.Now
	}
	f := &Firewall{clock: clock, base: clock(), seed: rand.Uint64() | 1}
	for i := range f.shards {
		f.shards[i].ips = make(map[netip.Addr]*entry)
		f.shards[i].sweepAt = minSweep
	}
	return f
}

// now is the bucket time, never below 0.
func (f *Firewall) now() int64 { return max(0, int64(f.clock().Sub(f.base))) }

func (f *Firewall) shardOf(a netip.Addr) *shard {
	// The top bits of the second product depend on every bit of the
	// address.
	x := addr6(a)
	h := ((x.hi^f.seed)*0x9e3779b97f4a7c15 ^ x.lo) * 0xbf58476d1ce4e5b9
	return &f.shards[h>>(64-shardBits)]
}

// Policy returns the policy in force, nil when there is none.
func (f *Firewall) Policy() *Policy { return f.policy.Load() }

// Refused returns how many admissions Admit has refused.
func (f *Firewall) Refused() uint64 { return f.refused.Load() }

// Open returns how many tickets are open (admitted and not yet released).
func (f *Firewall) Open() int {
	n := int64(0)
	for i := range f.shards {
		n += f.shards[i].open.Load()
	}
	return int(n)
}

// Update puts p in force (nil: admit everyone) for every admission from
// now on. Then, outside any lock and in the caller's goroutine, it calls
// the onBlock of every open ticket whose address p refuses by its
// allow-list or blocked IPs (not by its per-IP limits), at most once per
// ticket over all updates, so that the caller closes those connections.
// The tickets stay open until released. New limits apply to new
// admissions; open tickets keep counting against them.
func (f *Firewall) Update(p *Policy) {
	f.updateMu.Lock()
	f.policy.Store(p)
	var calls []func()
	if p.refusesAny() {
		for i := range f.shards {
			s := &f.shards[i]
			s.mu.Lock()
			for a, e := range s.ips {
				if e.open == 0 || p.Refuses(a) == OK {
					continue
				}
				for t := e.tickets; t != nil; t = t.next {
					if t.blocked {
						continue
					}
					t.blocked = true
					if t.onBlock != nil {
						calls = append(calls, t.onBlock)
					}
				}
			}
			s.mu.Unlock()
		}
	}
	f.updateMu.Unlock()
	for _, c := range calls {
		c()
	}
}

func (f *Firewall) refuse(v Verdict) (*Ticket, Verdict) {
	f.refused.Add(1)
	return nil, v
}

// Admit checks a new connection or flow from client address a (an
// IPv4-mapped address counts as its IPv4 form, a zone is ignored) against
// the policy in force: its allow-list, its blocked IPs, the rate bucket of
// a, then the concurrency cap of a. On OK it returns the ticket that holds
// the admission until Release; onBlock (may be nil) is called once if an
// Update later blocks a while the ticket is open. A refusal returns a nil
// ticket and the reason, counts in Refused and takes no rate token.
func (f *Firewall) Admit(a netip.Addr, onBlock func()) (*Ticket, Verdict) {
	a = a.Unmap().WithZone("")
	p := f.policy.Load()
	if v := p.Refuses(a); v != OK {
		return f.refuse(v)
	}
	s := f.shardOf(a)
	s.mu.Lock()
	// An Update that stored its policy after the load above may already
	// have walked this shard: check again under the lock what it would
	// have found.
	if q := f.policy.Load(); q != p {
		p = q
		if v := p.Refuses(a); v != OK {
			s.mu.Unlock()
			return f.refuse(v)
		}
	}
	e := s.ips[a]
	var now, interval int64
	if rate := int64(p.ConnectionRatePerIP()); rate > 0 {
		// GCRA: each admission moves tat on by one interval; the bucket
		// admits while tat is at most burst-1 intervals ahead of now.
		now = f.now()
		interval = max(1, int64(time.Second)/rate)
		if e != nil && e.tat != 0 && e.tat-now > interval*(rate-1) {
			s.mu.Unlock()
			return f.refuse(RateLimited)
		}
	}
	if m := p.MaxConnectionsPerIP(); m > 0 && e != nil && e.open >= m {
		s.mu.Unlock()
		return f.refuse(TooManyConnections)
	}
	if e == nil {
		if n := len(s.free); n > 0 {
			e = s.free[n-1]
			s.free = s.free[:n-1]
		} else {
			e = new(entry)
		}
		s.ips[a] = e
	}
	if interval > 0 {
		e.tat = max(e.tat, now) + interval
	}
	e.open++
	t := &Ticket{fw: f, s: s, e: e, addr: a, onBlock: onBlock, next: e.tickets}
	if e.tickets != nil {
		e.tickets.prev = t
	}
	e.tickets = t
	s.open.Add(1)
	s.mu.Unlock()
	return t, OK
}

// Release ends the admission: the ticket no longer counts open. It is
// idempotent, safe from any goroutine and a no-op on a nil ticket.
func (t *Ticket) Release() {
	if t == nil || !t.done.CompareAndSwap(false, true) {
		return
	}
	f, s, e := t.fw, t.s, t.e
	s.mu.Lock()
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		e.tickets = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	t.prev, t.next, t.onBlock = nil, nil, nil
	e.open--
	if e.open == 0 {
		switch {
		case e.tat == 0 || e.tat <= f.now():
			s.remove(t.addr, e)
		case !e.queued:
			e.queued = true
			s.idle = append(s.idle, idleEntry{t.addr, e})
			if len(s.idle) > s.sweepAt {
				f.sweep(s)
			}
		}
	}
	s.open.Add(-1)
	s.mu.Unlock()
}

// remove deletes the entry e of a from s.ips and keeps it for reuse
// unless s.idle still holds it. s.mu is held.
func (s *shard) remove(a netip.Addr, e *entry) {
	delete(s.ips, a)
	if e.queued {
		e.gone = true
		return
	}
	if len(s.free) < maxFree {
		*e = entry{}
		s.free = append(s.free, e)
	}
}

// sweep drops the entries of s.idle that opened again, and deletes those
// whose bucket is full again; past maxIdlePerShard it evicts the oldest
// (see maxIdlePerShard). s.mu is held.
func (f *Firewall) sweep(s *shard) {
	now := f.now()
	kept := s.idle[:0]
	for _, it := range s.idle {
		e := it.e
		switch {
		case e.gone:
		case e.open > 0:
			e.queued = false
		case e.tat <= now:
			e.queued = false
			s.remove(it.addr, e)
		default:
			kept = append(kept, it)
		}
	}
	if n := len(kept) - maxIdlePerShard*3/4; len(kept) > maxIdlePerShard {
		for _, it := range kept[:n] {
			it.e.queued = false
			s.remove(it.addr, it.e)
		}
		kept = kept[:copy(kept, kept[n:])]
	}
	clear(s.idle[len(kept):])
	s.idle = kept
	s.sweepAt = min(max(2*len(kept), minSweep), maxIdlePerShard)
}

// entries returns how many client IPs have state, for tests.
func (f *Firewall) entries() int {
	n := 0
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		n += len(s.ips)
		s.mu.Unlock()
	}
	return n
}

package firewall

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// admit admits a, failing t unless the verdict is want.
func admit(t *testing.T, f *Firewall, a string, want Verdict) *Ticket {
	t.Helper()
	tk, v := f.Admit(addr(a), nil)
	if v != want {
		t.Fatalf("Admit(%s) = %v, want %v", a, v, want)
	}
	if (tk != nil) != (v == OK) {
		t.Fatalf("Admit(%s) = %v with ticket %v", a, v, tk)
	}
	return tk
}

func TestNoPolicyAdmitsAndCounts(t *testing.T) {
	f := New(nil)
	var ts []*Ticket
	for _, a := range []string{"203.0.113.7", "203.0.113.7", "2001:db8::1", "::ffff:203.0.113.7"} {
		ts = append(ts, admit(t, f, a, OK))
	}
	if f.Open() != 4 || f.entries() != 2 {
		t.Fatalf("Open %d, entries %d; want 4 and 2 (the mapped address is the IPv4 one)", f.Open(), f.entries())
	}
	for _, tk := range ts {
		tk.Release()
	}
	if f.Open() != 0 || f.entries() != 0 || f.Refused() != 0 {
		t.Fatalf("after releasing all: Open %d, entries %d, Refused %d; want 0, 0, 0", f.Open(), f.entries(), f.Refused())
	}
}

func TestAdmitRefusesByPolicy(t *testing.T) {
	f := New(nil)
	f.Update(mustCompile(t, Rules{AllowedIPs: []string{"10.0.0.0/8"}, BlockedIPs: []string{"10.9.0.0/16", "::ffff:10.8.0.1"}}))
	admit(t, f, "10.1.0.1", OK).Release()
	admit(t, f, "10.9.0.1", Blocked)
	admit(t, f, "::ffff:10.9.0.1", Blocked)
	admit(t, f, "10.8.0.1", Blocked)
	admit(t, f, "11.0.0.1", NotAllowed)
	admit(t, f, "2001:db8::1", NotAllowed)
	if f.Refused() != 5 || f.Open() != 0 || f.entries() != 0 {
		t.Fatalf("Refused %d, Open %d, entries %d; want 5, 0, 0 (refusals keep no state)", f.Refused(), f.Open(), f.entries())
	}
}

func TestConcurrencyCapWithRelease(t *testing.T) {
	f := New(nil)
	f.Update(mustCompile(t, Rules{MaxConnectionsPerIP: 2}))
	a1 := admit(t, f, "203.0.113.7", OK)
	a2 := admit(t, f, "::ffff:203.0.113.7", OK)
	admit(t, f, "203.0.113.7", TooManyConnections)
	b := admit(t, f, "203.0.113.8", OK) // another IP has its own cap
	a1.Release()
	a1.Release() // idempotent: frees one place, not two
	a3 := admit(t, f, "203.0.113.7", OK)
	admit(t, f, "203.0.113.7", TooManyConnections)
	if f.Refused() != 2 || f.Open() != 3 {
		t.Fatalf("Refused %d, Open %d; want 2 and 3", f.Refused(), f.Open())
	}
	for _, tk := range []*Ticket{a2, a3, b} {
		tk.Release()
	}
	if f.Open() != 0 || f.entries() != 0 {
		t.Fatalf("Open %d, entries %d after releasing all", f.Open(), f.entries())
	}
}

func TestLimitChangeAppliesToNewAdmissions(t *testing.T) {
	f := New(nil)
	var blocked atomic.Int32
	var ts []*Ticket
	for range 3 {
		tk, v := f.Admit(addr("203.0.113.7"), func() { blocked.Add(1) })
		if v != OK {
			t.Fatal(v)
		}
		ts = append(ts, tk)
	}
	f.Update(mustCompile(t, Rules{MaxConnectionsPerIP: 2}))
	if blocked.Load() != 0 {
		t.Fatal("a lower cap called onBlock of open tickets")
	}
	admit(t, f, "203.0.113.7", TooManyConnections)
	ts[0].Release()
	admit(t, f, "203.0.113.7", TooManyConnections) // 2 still open
	ts[1].Release()
	ts = append(ts, admit(t, f, "203.0.113.7", OK))
	f.Update(mustCompile(t, Rules{MaxConnectionsPerIP: 3}))
	ts = append(ts, admit(t, f, "203.0.113.7", OK))
	admit(t, f, "203.0.113.7", TooManyConnections)
	for _, tk := range ts {
		tk.Release()
	}
	if f.Open() != 0 {
		t.Fatalf("Open %d", f.Open())
	}
}

func TestRateBucketBurstThenRefill(t *testing.T) {
	c := newFakeClock()
	f := New(c.Now)
	f.Update(mustCompile(t, Rules{ConnectionRatePerIP: 4}))
	// The burst is the rate: 4 at once, then none.
	for range 4 {
		admit(t, f, "203.0.113.7", OK).Release()
	}
	admit(t, f, "203.0.113.7", RateLimited)
	admit(t, f, "::ffff:203.0.113.7", RateLimited)
	admit(t, f, "203.0.113.8", OK).Release() // its own bucket
	// One token comes back every 250ms.
	c.Advance(249 * time.Millisecond)
	admit(t, f, "203.0.113.7", RateLimited)
	c.Advance(time.Millisecond)
	admit(t, f, "203.0.113.7", OK).Release()
	admit(t, f, "203.0.113.7", RateLimited)
	c.Advance(500 * time.Millisecond)
	admit(t, f, "203.0.113.7", OK).Release()
	admit(t, f, "203.0.113.7", OK).Release()
	admit(t, f, "203.0.113.7", RateLimited)
	// A long pause fills the bucket to its burst and no further.
	c.Advance(time.Hour)
	for range 4 {
		admit(t, f, "203.0.113.7", OK).Release()
	}
	admit(t, f, "203.0.113.7", RateLimited)
	if f.Refused() != 6 {
		t.Fatalf("Refused %d, want 6", f.Refused())
	}
}

func TestRefusedAttemptTakesNoToken(t *testing.T) {
	c := newFakeClock()
	f := New(c.Now)
	f.Update(mustCompile(t, Rules{ConnectionRatePerIP: 2, MaxConnectionsPerIP: 1}))
	held := admit(t, f, "203.0.113.7", OK) // 1 token left
	for range 10 {
		admit(t, f, "203.0.113.7", TooManyConnections)
	}
	held.Release()
	admit(t, f, "203.0.113.7", OK).Release() // the token the refusals did not take
	admit(t, f, "203.0.113.7", RateLimited)
	c.Advance(300 * time.Millisecond)
	for range 10 {
		admit(t, f, "203.0.113.7", RateLimited)
	}
	// Being rate limited did not prolong itself: the first token is back
	// 500ms after the last admission.
	c.Advance(200 * time.Millisecond)
	admit(t, f, "203.0.113.7", OK).Release()
}

func TestRateEntriesDroppedWhenFull(t *testing.T) {
	c := newFakeClock()
	f := New(c.Now)
	f.Update(mustCompile(t, Rules{ConnectionRatePerIP: 10}))
	admit(t, f, "203.0.113.7", OK).Release()
	if f.entries() != 1 {
		t.Fatalf("entries %d: a used bucket must be kept until full", f.entries())
	}
	// Once the bucket is full again, the next release drops it.
	tk := admit(t, f, "203.0.113.8", OK)
	c.Advance(time.Second)
	tk.Release()
	if f.entries() != 1 {
		t.Fatalf("entries %d, want 1 (203.0.113.8's bucket was full at release)", f.entries())
	}
	// Many idle entries whose buckets are full are swept.
	for i := range 5000 {
		admit(t, f, netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String(), OK).Release()
	}
	c.Advance(2 * time.Second)
	for i := range 5000 {
		admit(t, f, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String(), OK).Release()
	}
	if n := f.entries(); n > 5000+shardCount*minSweep {
		t.Fatalf("entries %d: the full buckets of the first 5000 were not swept", n)
	}
}

func TestMemoryBoundUnderAddressFlood(t *testing.T) {
	c := newFakeClock()
	f := New(c.Now)
	f.Update(mustCompile(t, Rules{ConnectionRatePerIP: 5, MaxConnectionsPerIP: 10}))
	n := 1_000_000
	if testing.Short() {
		n = 200_000
	}
	var b [16]byte
	b[0] = 0x20
	for i := range n {
		binary.BigEndian.PutUint64(b[8:], uint64(i)*0x9e3779b97f4a7c15)
		a := netip.AddrFrom16(b)
		if i%2 == 0 {
			a = netip.AddrFrom4([4]byte(b[12:]))
		}
		tk, v := f.Admit(a, nil)
		if v != OK {
			t.Fatalf("address %d (%v): %v", i, a, v)
		}
		tk.Release()
	}
	if got, bound := f.entries(), shardCount*maxIdlePerShard; got > bound {
		t.Fatalf("%d distinct addresses left %d entries, more than the bound %d", n, got, bound)
	}
	for i := range f.shards {
		if q := len(f.shards[i].idle); q > maxIdlePerShard+1 {
			t.Fatalf("shard %d queues %d idle entries", i, q)
		}
	}
	// What goes first at the bound is the longest idle: the address used
	// last is still counted (5 per second, 5 of them now).
	last := netip.MustParseAddr("2001:db8::5")
	for range 5 {
		tk, _ := f.Admit(last, nil)
		tk.Release()
	}
	for range 100 {
		b[0] = 0x30
		binary.BigEndian.PutUint64(b[8:], uint64(n))
		n++
		tk, _ := f.Admit(netip.AddrFrom16(b), nil)
		tk.Release()
	}
	if _, v := f.Admit(last, nil); v != RateLimited {
		t.Fatalf("the address used last: %v, want rate limited (its bucket was evicted)", v)
	}
	if f.Open() != 0 {
		t.Fatalf("Open %d", f.Open())
	}
}

func TestUpdateBlockCallsOnBlockOfExactlyThoseTickets(t *testing.T) {
	f := New(nil)
	called := map[string]int{}
	var mu sync.Mutex
	open := map[string]*Ticket{}
	for _, k := range []string{"a:203.0.113.7", "b:203.0.113.7", "c:::ffff:203.0.113.7", "d:203.0.113.8", "e:2001:db8::1", "f:2001:db8:1::1", "g:198.51.100.1"} {
		name, a := k[:1], k[2:]
		tk, v := f.Admit(addr(a), func() {
			mu.Lock()
			called[name]++
			mu.Unlock()
		})
		if v != OK {
			t.Fatal(v)
		}
		open[name] = tk
	}
	open["g"].Release() // released: never called
	f.Update(mustCompile(t, Rules{BlockedIPs: []string{"203.0.113.7", "2001:db8::/48", "198.51.100.0/24"}}))
	want := map[string]int{"a": 1, "b": 1, "c": 1, "e": 1}
	if diff := cmp.Diff(want, called); diff != "" {
		t.Fatalf("onBlock calls (-want +got):\n%s", diff)
	}
	// The tickets stay open until released, and a second update blocking
	// them again does not call again; a newly blocked one is called.
	if f.Open() != 6 {
		t.Fatalf("Open %d, want 6", f.Open())
	}
	f.Update(mustCompile(t, Rules{BlockedIPs: []string{"203.0.113.0/24", "2001:db8::/32"}}))
	want = map[string]int{"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1}
	if diff := cmp.Diff(want, called); diff != "" {
		t.Fatalf("onBlock calls after the second update (-want +got):\n%s", diff)
	}
	for _, tk := range open {
		tk.Release()
	}
	if f.Open() != 0 || f.entries() != 0 {
		t.Fatalf("Open %d, entries %d", f.Open(), f.entries())
	}
}

func TestUpdateAllowListCallsOnBlockOutside(t *testing.T) {
	f := New(nil)
	var in, out atomic.Int32
	tin, _ := f.Admit(addr("10.0.0.1"), func() { in.Add(1) })
	tout, _ := f.Admit(addr("2001:db8::1"), func() { out.Add(1) })
	tnil, _ := f.Admit(addr("11.0.0.1"), nil) // a nil onBlock is fine
	f.Update(mustCompile(t, Rules{AllowedIPs: []string{"10.0.0.0/8"}}))
	if in.Load() != 0 || out.Load() != 1 {
		t.Fatalf("onBlock calls: inside the allow-list %d, outside %d; want 0 and 1", in.Load(), out.Load())
	}
	// Limits alone never call onBlock.
	f.Update(mustCompile(t, Rules{AllowedIPs: []string{"10.0.0.0/8", "2001:db8::/32"}, MaxConnectionsPerIP: 1, ConnectionRatePerIP: 1}))
	if in.Load() != 0 {
		t.Fatal("limits called onBlock")
	}
	for _, tk := range []*Ticket{tin, tout, tnil} {
		tk.Release()
	}
}

func TestOnBlockMayRelease(t *testing.T) {
	f := New(nil)
	var tk *Ticket
	tk, _ = f.Admit(addr("203.0.113.7"), func() { tk.Release() })
	f.Update(mustCompile(t, Rules{BlockedIPs: []string{"203.0.113.7"}}))
	if f.Open() != 0 {
		t.Fatalf("Open %d: onBlock could not release its ticket", f.Open())
	}
}

func TestReleaseIdempotent(t *testing.T) {
	f := New(nil)
	t1 := admit(t, f, "203.0.113.7", OK)
	t2 := admit(t, f, "203.0.113.7", OK)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(t1.Release)
	}
	wg.Wait()
	if f.Open() != 1 {
		t.Fatalf("Open %d after releasing one of two tickets 8 times, want 1", f.Open())
	}
	t2.Release()
	t2.Release()
	var nilTicket *Ticket
	nilTicket.Release()
	if f.Open() != 0 || f.entries() != 0 {
		t.Fatalf("Open %d, entries %d", f.Open(), f.entries())
	}
}

// TestConcurrentAdmitReleaseUpdate runs admissions, releases and updates
// at once (under -race) and then checks that the final blocking update
// reached every ticket left open, however it interleaved with Admit.
func TestConcurrentAdmitReleaseUpdate(t *testing.T) {
	f := New(nil)
	policies := []*Policy{
		nil,
		mustCompile(t, Rules{BlockedIPs: []string{"10.0.0.0/30", "2001:db8::/126"}}),
		mustCompile(t, Rules{MaxConnectionsPerIP: 3, ConnectionRatePerIP: 1000}),
		mustCompile(t, Rules{AllowedIPs: []string{"10.0.0.0/29"}}),
	}
	blockAll := mustCompile(t, Rules{BlockedIPs: []string{"0.0.0.0/0", "::/0"}})
	type held struct {
		t       *Ticket
		blocked *atomic.Bool
	}
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		left    []held
		admits  atomic.Int64
		updates atomic.Int64
	)
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			var mine []held
			for !stop.Load() {
				var a netip.Addr
				if r.IntN(2) == 0 {
					a = netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(16))})
				} else {
					a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(r.IntN(16))})
				}
				b := new(atomic.Bool)
				tk, v := f.Admit(a, func() { b.Store(true) })
				if v == OK {
					admits.Add(1)
					mine = append(mine, held{tk, b})
				}
				if len(mine) > 20 || len(mine) > 0 && r.IntN(2) == 0 {
					i := r.IntN(len(mine))
					mine[i].t.Release()
					if r.IntN(4) == 0 {
						mine[i].t.Release()
					}
					mine[i] = mine[len(mine)-1]
					mine = mine[:len(mine)-1]
				}
			}
			mu.Lock()
			left = append(left, mine...)
			mu.Unlock()
		})
	}
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			f.Update(policies[i%len(policies)])
			updates.Add(1)
		}
	})
	for admits.Load() < 20000 || updates.Load() < 200 {
		time.Sleep(time.Millisecond)
	}
	for updates.Load() < 400 {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	// The last word: block everything while admissions still run.
	stop.Store(false)
	var late sync.WaitGroup
	var lateHeld []held
	for g := range 4 {
		late.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 2))
			var mine []held
			for !stop.Load() {
				a := netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(16))})
				b := new(atomic.Bool)
				if tk, v := f.Admit(a, func() { b.Store(true) }); v == OK {
					mine = append(mine, held{tk, b})
				}
			}
			mu.Lock()
			lateHeld = append(lateHeld, mine...)
			mu.Unlock()
		})
	}
	f.Update(nil)
	time.Sleep(5 * time.Millisecond)
	f.Update(blockAll)
	stop.Store(true)
	late.Wait()
	for _, h := range append(left, lateHeld...) {
		if !h.blocked.Load() {
			t.Fatalf("a ticket open at the blocking update was not told (%d left, %d late)", len(left), len(lateHeld))
		}
		h.t.Release()
	}
	if f.Open() != 0 {
		t.Fatalf("Open %d after releasing everything", f.Open())
	}
	for i := range f.shards {
		for a, e := range f.shards[i].ips {
			if e.open != 0 || e.tickets != nil {
				t.Fatalf("%v still has %d open", a, e.open)
			}
		}
	}
}

func TestShardsSpreadAddresses(t *testing.T) {
	f := New(nil)
	// Addresses that differ only in the high bits of their prefix, or
	// only in their last byte, still spread over the shards.
	for _, gen := range []func(i int) netip.Addr{
		func(i int) netip.Addr { return netip.AddrFrom16([16]byte{0x20, 0x01, byte(i >> 8), byte(i), 15: 1}) },
		func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}) },
		func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		},
	} {
		counts := map[*shard]int{}
		for i := range 4096 {
			counts[f.shardOf(gen(i))]++
		}
		for s, n := range counts {
			if n > 4096/shardCount*2 {
				t.Fatalf("shard %p got %d of 4096 addresses", s, n)
			}
		}
		if len(counts) != shardCount {
			t.Fatalf("4096 addresses went to %d of %d shards", len(counts), shardCount)
		}
	}
}

func TestZeroAddress(t *testing.T) {
	f := New(nil)
	tk, v := f.Admit(netip.Addr{}, nil)
	if v != OK {
		t.Fatalf("no policy: the zero address is %v", v)
	}
	tk.Release()
	f.Update(mustCompile(t, Rules{AllowedIPs: []string{"0.0.0.0/0", "::/0"}}))
	if _, v := f.Admit(netip.Addr{}, nil); v != NotAllowed {
		t.Fatalf("allow-list of everything: the zero address is %v, want not in allow-list", v)
	}
}

func TestZoneIgnored(t *testing.T) {
	f := New(nil)
	f.Update(mustCompile(t, Rules{MaxConnectionsPerIP: 1, BlockedIPs: []string{"fe80::2"}}))
	tk := admit(t, f, "fe80::1%eth0", OK)
	admit(t, f, "fe80::1%eth1", TooManyConnections)
	admit(t, f, "fe80::2%eth0", Blocked)
	tk.Release()
}

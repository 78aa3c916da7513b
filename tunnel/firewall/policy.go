package firewall

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
)

// Verdict is the outcome of an admission check: OK or the reason for a
// refusal. Its String is a short phrase for a log line.
type Verdict uint8

// The verdicts, in the order the checks run (see the package comment).
const (
	// OK admits the connection or flow.
	OK Verdict = iota
	// NotAllowed refuses an address outside a non-empty allow-list.
	NotAllowed
	// Blocked refuses an address inside a blocked IP or CIDR.
	Blocked
	// RateLimited refuses an address whose rate bucket is empty.
	RateLimited
	// TooManyConnections refuses an address at its concurrency cap.
	TooManyConnections
)

// String returns the verdict as a log line would say it: "ok",
// "not in allow-list", "blocked", "rate limited", "too many connections".
func (v Verdict) String() string {
	switch v {
	case OK:
		return "ok"
	case NotAllowed:
		return "not in allow-list"
	case Blocked:
		return "blocked"
	case RateLimited:
		return "rate limited"
	case TooManyConnections:
		return "too many connections"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// u128 is an IPv6 address as a 128-bit unsigned number, hi the first 8
// bytes.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

// next returns a+1 and whether it did not wrap around.
func (a u128) next() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return u128{}, false
}

func addr6(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// range4 and range6 are inclusive address ranges [lo, hi].
type range4 struct{ lo, hi uint32 }
type range6 struct{ lo, hi u128 }

// set is a set of addresses: sorted, disjoint, non-adjacent ranges per
// family, searched by bisection.
type set struct {
	v4 []range4
	v6 []range6
}

func (s *set) empty() bool { return len(s.v4) == 0 && len(s.v6) == 0 }

// newSet merges the prefixes (as ParsePrefix returns them: masked, IPv4
// unmapped) into ranges.
func newSet(ps []netip.Prefix) set {
	var s set
	for _, p := range ps {
		a, bits := p.Addr(), p.Bits()
		if a.Is4() {
			lo := addr4(a)
			var host uint32
			if bits < 32 {
				host = ^uint32(0) >> bits
			}
			s.v4 = append(s.v4, range4{lo &^ host, lo | host})
			continue
		}
		lo := addr6(a)
		var host u128
		switch {
		case bits == 0:
			host = u128{^uint64(0), ^uint64(0)}
		case bits < 64:
			host = u128{^uint64(0) >> bits, ^uint64(0)}
		case bits < 128:
			host = u128{0, ^uint64(0) >> (bits - 64)}
		}
		lo = u128{lo.hi &^ host.hi, lo.lo &^ host.lo}
		s.v6 = append(s.v6, range6{lo, u128{lo.hi | host.hi, lo.lo | host.lo}})
	}
	slices.SortFunc(s.v4, func(a, b range4) int { return cmp.Compare(a.lo, b.lo) })
	out4 := s.v4[:0]
	for _, r := range s.v4 {
		// r joins the previous range when it starts at or before its end
		// + 1.
		if n := len(out4); n > 0 && (out4[n-1].hi == ^uint32(0) || r.lo <= out4[n-1].hi+1) {
			out4[n-1].hi = max(out4[n-1].hi, r.hi)
			continue
		}
		out4 = append(out4, r)
	}
	s.v4 = slices.Clip(out4)
	slices.SortFunc(s.v6, func(a, b range6) int {
		if c := cmp.Compare(a.lo.hi, b.lo.hi); c != 0 {
			return c
		}
		return cmp.Compare(a.lo.lo, b.lo.lo)
	})
	out6 := s.v6[:0]
	for _, r := range s.v6 {
		if n := len(out6); n > 0 {
			prev := &out6[n-1]
			if after, ok := prev.hi.next(); !ok || !after.less(r.lo) {
				if prev.hi.less(r.hi) {
					prev.hi = r.hi
				}
				continue
			}
		}
		out6 = append(out6, r)
	}
	s.v6 = slices.Clip(out6)
	return s
}

// contains reports whether a (unmapped, any zone ignored) is in s.
func (s *set) contains(a netip.Addr) bool {
	if a.Is4() {
		x := addr4(a)
		rs := s.v4
		// Find the first range with lo > x; the one before it is the only
		// candidate.
		i, j := 0, len(rs)
		for i < j {
			h := int(uint(i+j) >> 1)
			if rs[h].lo <= x {
				i = h + 1
			} else {
				j = h
			}
		}
		return i > 0 && x <= rs[i-1].hi
	}
	if !a.Is6() {
		return false
	}
	x := addr6(a)
	rs := s.v6
	i, j := 0, len(rs)
	for i < j {
		h := int(uint(i+j) >> 1)
		if !x.less(rs[h].lo) {
			i = h + 1
		} else {
			j = h
		}
	}
	return i > 0 && !rs[i-1].hi.less(x)
}

// Policy is a compiled Rules: its address lists as sorted, merged ranges
// (IPv4 and IPv6 apart) that a lookup bisects without allocating, and its
// per-IP limits. A Policy is immutable and safe for concurrent use; a nil
// *Policy admits everyone.
type Policy struct {
	blocked, allowed set
	allowList        bool // allowed IPs were given: only they are admitted
	maxConns         int
	rate             int
}

// Compile validates r (failing as Validate does, with a *FieldError) and
// compiles it.
func Compile(r Rules) (*Policy, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	blocked, err := r.Blocked()
	if err != nil {
		return nil, err
	}
	allowed, err := r.Allowed()
	if err != nil {
		return nil, err
	}
	return &Policy{
		blocked:   newSet(blocked),
		allowed:   newSet(allowed),
		allowList: len(allowed) > 0,
		maxConns:  r.MaxConnectionsPerIP,
		rate:      r.ConnectionRatePerIP,
	}, nil
}

// Refuses checks a against the allow-list and then the blocked IPs, not
// the per-IP limits: OK, NotAllowed or Blocked. An IPv4-mapped IPv6
// address is checked as its IPv4 form; IPv6 rules never match IPv4
// addresses (not even ::/0), nor IPv4 rules IPv6 ones. An invalid
// (zero) address is admitted unless there is an allow-list.
func (p *Policy) Refuses(a netip.Addr) Verdict {
	if p == nil {
		return OK
	}
	a = a.Unmap()
	if p.allowList && !p.allowed.contains(a) {
		return NotAllowed
	}
	if p.blocked.contains(a) {
		return Blocked
	}
	return OK
}

// refusesAny reports whether Refuses can refuse some address.
func (p *Policy) refusesAny() bool { return p != nil && (p.allowList || !p.blocked.empty()) }

// MaxConnectionsPerIP is the cap on what one client IP holds open at once,
// 0 for none (also for a nil Policy).
func (p *Policy) MaxConnectionsPerIP() int {
	if p == nil {
		return 0
	}
	return p.maxConns
}

// ConnectionRatePerIP is the number of new connections and flows per
// second per client IP, also the burst; 0 for no limit (also for a nil
// Policy).
func (p *Policy) ConnectionRatePerIP() int {
	if p == nil {
		return 0
	}
	return p.rate
}

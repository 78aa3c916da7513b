package firewall

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustCompile(t testing.TB, r Rules) *Policy {
	t.Helper()
	p, err := Compile(r)
	if err != nil {
		t.Fatalf("Compile(%+v): %v", r, err)
	}
	return p
}

// verdicts returns what p says of each address, by address.
func verdicts(p *Policy, addrs ...string) map[string]Verdict {
	out := make(map[string]Verdict, len(addrs))
	for _, s := range addrs {
		out[s] = p.Refuses(netip.MustParseAddr(s))
	}
	return out
}

func TestRefusesBlockedIPsAndCIDRs(t *testing.T) {
	p := mustCompile(t, Rules{BlockedIPs: []string{
		"203.0.113.0/24", "198.51.100.7", "2001:db8:1::/48", "2001:db8::42", " 192.0.2.128/25 ",
	}})
	got := verdicts(p,
		"203.0.113.0", "203.0.113.255", "203.0.112.255", "203.0.114.0",
		"198.51.100.7", "198.51.100.6", "198.51.100.8",
		"192.0.2.128", "192.0.2.255", "192.0.2.127",
		"2001:db8:1::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff", "2001:db8:2::", "2001:db8:0:ffff::1",
		"2001:db8::42", "2001:db8::41", "2001:db8::43",
		"::ffff:203.0.113.7", "::ffff:198.51.100.6",
	)
	want := map[string]Verdict{
		"203.0.113.0": Blocked, "203.0.113.255": Blocked, "203.0.112.255": OK, "203.0.114.0": OK,
		"198.51.100.7": Blocked, "198.51.100.6": OK, "198.51.100.8": OK,
		"192.0.2.128": Blocked, "192.0.2.255": Blocked, "192.0.2.127": OK,
		"2001:db8:1::": Blocked, "2001:db8:1:ffff:ffff:ffff:ffff:ffff": Blocked, "2001:db8:2::": OK, "2001:db8:0:ffff::1": OK,
		"2001:db8::42": Blocked, "2001:db8::41": OK, "2001:db8::43": OK,
		"::ffff:203.0.113.7": Blocked, "::ffff:198.51.100.6": OK,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("verdicts (-want +got):\n%s", diff)
	}
}

func TestIPv4MappedClientMatchesIPv4Rule(t *testing.T) {
	p := mustCompile(t, Rules{BlockedIPs: []string{"203.0.113.7"}})
	if v := p.Refuses(netip.MustParseAddr("::ffff:203.0.113.7")); v != Blocked {
		t.Fatalf("::ffff:203.0.113.7 against blocked 203.0.113.7: %v, want blocked", v)
	}
	// A mapped rule is an IPv4 rule too.
	p = mustCompile(t, Rules{BlockedIPs: []string{"::ffff:203.0.113.0/120"}})
	got := verdicts(p, "203.0.113.9", "::ffff:203.0.113.9", "203.0.114.9")
	want := map[string]Verdict{"203.0.113.9": Blocked, "::ffff:203.0.113.9": Blocked, "203.0.114.9": OK}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("verdicts of ::ffff:203.0.113.0/120 (-want +got):\n%s", diff)
	}
	// An allow-list of IPv4 admits the mapped form.
	p = mustCompile(t, Rules{AllowedIPs: []string{"203.0.113.0/24"}})
	if v := p.Refuses(netip.MustParseAddr("::ffff:203.0.113.7")); v != OK {
		t.Fatalf("::ffff:203.0.113.7 against allowed 203.0.113.0/24: %v, want ok", v)
	}
}

func TestIPv6RulesDoNotMatchIPv4(t *testing.T) {
	p := mustCompile(t, Rules{BlockedIPs: []string{"::/0"}})
	got := verdicts(p, "2001:db8::1", "::1", "203.0.113.7", "::ffff:203.0.113.7")
	want := map[string]Verdict{"2001:db8::1": Blocked, "::1": Blocked, "203.0.113.7": OK, "::ffff:203.0.113.7": OK}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("verdicts of blocked ::/0 (-want +got):\n%s", diff)
	}
	p = mustCompile(t, Rules{BlockedIPs: []string{"0.0.0.0/0"}})
	got = verdicts(p, "2001:db8::1", "203.0.113.7", "::ffff:203.0.113.7")
	want = map[string]Verdict{"2001:db8::1": OK, "203.0.113.7": Blocked, "::ffff:203.0.113.7": Blocked}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("verdicts of blocked 0.0.0.0/0 (-want +got):\n%s", diff)
	}
}

func TestAllowListOnly(t *testing.T) {
	p := mustCompile(t, Rules{AllowedIPs: []string{"10.1.0.0/16", "2001:db8::/32", "192.0.2.1"}})
	got := verdicts(p, "10.1.2.3", "10.2.0.1", "2001:db8:ffff::1", "2001:db9::1", "192.0.2.1", "192.0.2.2", "::ffff:10.1.0.1")
	want := map[string]Verdict{
		"10.1.2.3": OK, "10.2.0.1": NotAllowed, "2001:db8:ffff::1": OK, "2001:db9::1": NotAllowed,
		"192.0.2.1": OK, "192.0.2.2": NotAllowed, "::ffff:10.1.0.1": OK,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("verdicts (-want +got):\n%s", diff)
	}
	// An allow-list of one family refuses the whole other one.
	p = mustCompile(t, Rules{AllowedIPs: []string{"10.0.0.0/8"}})
	if v := p.Refuses(netip.MustParseAddr("2001:db8::1")); v != NotAllowed {
		t.Fatalf("IPv6 client against an IPv4-only allow-list: %v, want not in allow-list", v)
	}
}

func TestBlockInsideAllow(t *testing.T) {
	p := mustCompile(t, Rules{
		AllowedIPs: []string{"10.0.0.0/8", "2001:db8::/32"},
		BlockedIPs: []string{"10.9.0.0/16", "2001:db8:9::/48"},
	})
	got := verdicts(p, "10.1.0.1", "10.9.0.1", "11.0.0.1", "2001:db8:8::1", "2001:db8:9::1", "2001:db9::1")
	want := map[string]Verdict{
		"10.1.0.1": OK, "10.9.0.1": Blocked, "11.0.0.1": NotAllowed,
		"2001:db8:8::1": OK, "2001:db8:9::1": Blocked, "2001:db9::1": NotAllowed,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("verdicts (-want +got):\n%s", diff)
	}
}

func TestNilAndEmptyPolicyAdmitAll(t *testing.T) {
	var nilP *Policy
	empty := mustCompile(t, Rules{})
	for _, p := range []*Policy{nilP, empty} {
		for _, s := range []string{"203.0.113.7", "2001:db8::1", "::ffff:1.2.3.4"} {
			if v := p.Refuses(netip.MustParseAddr(s)); v != OK {
				t.Fatalf("%v refuses %s: %v", p, s, v)
			}
		}
		if v := p.Refuses(netip.Addr{}); v != OK {
			t.Fatalf("%v refuses the zero address: %v", p, v)
		}
	}
	if nilP.MaxConnectionsPerIP() != 0 || nilP.ConnectionRatePerIP() != 0 {
		t.Fatal("a nil policy has limits")
	}
}

func TestCompileMergesRanges(t *testing.T) {
	p := mustCompile(t, Rules{BlockedIPs: []string{
		"10.0.0.0/24", "10.0.1.0/24", // adjacent: one range
		"10.0.0.128/25",           // inside
		"10.0.3.0/24", "10.0.3.7", // apart, with one inside
		"255.255.255.255", "255.255.255.0/24", // at the top
		"2001:db8::/64", "2001:db8:0:1::/64", // adjacent
		"2001:db8::1",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64",
		"::/128",
	}})
	want := set{
		v4: []range4{
			{0x0a000000, 0x0a0001ff},
			{0x0a000300, 0x0a0003ff},
			{0xffffff00, 0xffffffff},
		},
		v6: []range6{
			{u128{0, 0}, u128{0, 0}},
			{u128{0x20010db800000000, 0}, u128{0x20010db800000001, ^uint64(0)}},
			{u128{^uint64(0), 0}, u128{^uint64(0), ^uint64(0)}},
		},
	}
	if diff := cmp.Diff(want, p.blocked, cmp.AllowUnexported(set{}, range4{}, range6{}, u128{})); diff != "" {
		t.Fatalf("blocked ranges (-want +got):\n%s", diff)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		r     Rules
		field string
	}{
		{Rules{BlockedIPs: []string{"10.0.0.1", "2001:db8::/32", "10.0.0.300"}}, "blockedIps[2]"},
		{Rules{BlockedIPs: []string{"10.0.0.0/33"}}, "blockedIps[0]"},
		{Rules{BlockedIPs: []string{""}}, "blockedIps[0]"},
		{Rules{BlockedIPs: []string{"fe80::1%eth0"}}, "blockedIps[0]"},
		{Rules{BlockedIPs: []string{"::ffff:0:0/95"}}, "blockedIps[0]"},
		{Rules{AllowedIPs: []string{"10.0.0.0/8", "example.com"}}, "allowedIps[1]"},
		{Rules{MaxConnectionsPerIP: -1}, "maxConnectionsPerIp"},
		{Rules{ConnectionRatePerIP: -5}, "connectionRatePerIp"},
	} {
		for name, err := range map[string]error{"Validate": c.r.Validate(), "Compile": compileErr(c.r)} {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%s(%+v) = %v, want a *FieldError", name, c.r, err)
			}
			if fe.Field != c.field {
				t.Fatalf("%s(%+v) names %q, want %q (%v)", name, c.r, fe.Field, c.field, err)
			}
		}
	}
	if err := (Rules{BlockedIPs: []string{"10.0.0.1", "::1", "10.0.0.0/8"}, MaxConnectionsPerIP: 3, ConnectionRatePerIP: 9}).Validate(); err != nil {
		t.Fatalf("good rules: %v", err)
	}
}

func compileErr(r Rules) error {
	p, err := Compile(r)
	if err == nil && p == nil {
		return errors.New("nil policy without an error")
	}
	return err
}

func TestRefusesDoesNotAllocate(t *testing.T) {
	p := mustCompile(t, randomRules(rand.New(rand.NewPCG(1, 2)), 10000))
	addrs := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.0.0.1")}
	if n := testing.AllocsPerRun(100, func() {
		for _, a := range addrs {
			p.Refuses(a)
		}
	}); n != 0 {
		t.Fatalf("Refuses allocates %v times per run", n)
	}
}

// randomAddr returns an address from a small space, so that random
// prefixes overlap and random addresses hit them: IPv4 (a third of them
// IPv4-mapped IPv6) or IPv6.
func randomAddr(r *rand.Rand) netip.Addr {
	if r.IntN(2) == 0 {
		a := netip.AddrFrom4([4]byte{byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		if r.IntN(3) == 0 {
			return netip.AddrFrom16(a.As16())
		}
		return a
	}
	var b [16]byte
	for i := range b {
		switch r.IntN(4) {
		case 0:
			b[i] = 0xff
		case 1:
			b[i] = byte(r.IntN(256))
		}
	}
	return netip.AddrFrom16(b)
}

// randomPrefix returns a rule: a single address or a CIDR of any length
// (mostly long ones), in text.
func randomPrefix(r *rand.Rand) string {
	a := randomAddr(r)
	if r.IntN(4) == 0 {
		return a.String()
	}
	bits := a.BitLen() - r.IntN(a.BitLen()/2+1)
	if r.IntN(8) == 0 {
		bits = r.IntN(a.BitLen() + 1)
	}
	if a.Is4In6() {
		bits = max(bits, 96)
	}
	return netip.PrefixFrom(a, bits).String()
}

func randomRules(r *rand.Rand, n int) Rules {
	var rules Rules
	for range n {
		rules.BlockedIPs = append(rules.BlockedIPs, randomPrefix(r))
	}
	return rules
}

// naive is the reference matcher: a linear scan with netip.Prefix.Contains.
func naive(allowed, blocked []netip.Prefix, a netip.Addr) Verdict {
	a = a.Unmap()
	if len(allowed) > 0 {
		in := false
		for _, p := range allowed {
			in = in || p.Contains(a)
		}
		if !in {
			return NotAllowed
		}
	}
	for _, p := range blocked {
		if p.Contains(a) {
			return Blocked
		}
	}
	return OK
}

// edges returns addresses at and around the ends of p, where a range
// matcher goes wrong first.
func edges(p netip.Prefix) []netip.Addr {
	lo := p.Masked().Addr()
	b := lo.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	hi, _ := netip.AddrFromSlice(b)
	out := []netip.Addr{lo, hi}
	for _, a := range []netip.Addr{lo.Prev(), hi.Next()} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// checkAgainstNaive fails t when p (compiled from rules) disagrees with the
// naive matcher on any of addrs or the edges of any rule.
func checkAgainstNaive(t *testing.T, rules Rules, p *Policy, addrs []netip.Addr) {
	t.Helper()
	allowed, err := rules.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := rules.Blocked()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append(append([]netip.Prefix(nil), allowed...), blocked...) {
		addrs = append(addrs, edges(q)...)
	}
	for _, a := range addrs {
		for _, a := range []netip.Addr{a, netip.AddrFrom16(a.As16())} {
			if got, want := p.Refuses(a), naive(allowed, blocked, a); got != want {
				t.Fatalf("Refuses(%v) = %v, a linear scan says %v\nallowed %v\nblocked %v", a, got, want, allowed, blocked)
			}
		}
	}
}

func TestRangeMatcherAgreesWithNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for round := range 300 {
		var rules Rules
		for range r.IntN(40) {
			rules.BlockedIPs = append(rules.BlockedIPs, randomPrefix(r))
		}
		if round%3 == 0 {
			for range 1 + r.IntN(10) {
				rules.AllowedIPs = append(rules.AllowedIPs, randomPrefix(r))
			}
		}
		p := mustCompile(t, rules)
		addrs := make([]netip.Addr, 200)
		for i := range addrs {
			addrs[i] = randomAddr(r)
		}
		checkAgainstNaive(t, rules, p, addrs)
	}
}

func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{
		"203.0.113.7", "203.0.113.0/24", "203.0.113.7/24", "2001:db8::1", "2001:db8::/32",
		"::ffff:203.0.113.7", "::ffff:203.0.113.0/120", "::ffff:0:0/96", "::ffff:0:0/95",
		"0.0.0.0/0", "::/0", " 10.0.0.1 ", "fe80::1%eth0", "10.0.0.1/", "/8", "", "1.2.3.4/33",
		"01.2.3.4", "::ffff:1.2.3.4/128", "::/80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			if p != (netip.Prefix{}) {
				t.Fatalf("ParsePrefix(%q) fails (%v) but returns %v", s, err, p)
			}
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParsePrefix(%q) = %v: not valid, masked, unmapped and zoneless", s, p)
		}
		back, err := ParsePrefix(p.String())
		if err != nil || back != p {
			t.Fatalf("ParsePrefix(%q) = %v, which parses back to %v, %v", s, p, back, err)
		}
		// A plain address is itself, unmapped, as a full-length prefix.
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			if want := netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()); p != want {
				t.Fatalf("ParsePrefix(%q) = %v, want %v", s, p, want)
			}
		}
		// As a rule it blocks the addresses of the prefix and their
		// IPv4-mapped forms; clients are unmapped first, so an IPv6 rule
		// over ::ffff:0:0/96 (such as ::/80) blocks no IPv4 client.
		pol, err := Compile(Rules{BlockedIPs: []string{s}})
		if err != nil {
			t.Fatalf("Compile of the good rule %q: %v", s, err)
		}
		for _, a := range edges(p) {
			want := Verdict(OK)
			if p.Contains(a.Unmap()) {
				want = Blocked
			}
			if got := pol.Refuses(a); got != want {
				t.Fatalf("rule %q: Refuses(%v) = %v, want %v", s, a, got, want)
			}
			if got := pol.Refuses(netip.AddrFrom16(a.As16())); a.Is4() && got != want {
				t.Fatalf("rule %q: Refuses(mapped %v) = %v, want %v", s, a, got, want)
			}
		}
	})
}

// fuzzRules decodes rules from fuzzed bytes: each rule is a tag byte (high
// bit: IPv6; bit 6: allowed rather than blocked; the rest, modulo the
// address length + 1: the prefix length) and 4 or 16 address bytes. It
// stops at 64 rules, which keeps the quadratic check against the naive
// matcher quick.
func fuzzRules(b []byte) Rules {
	var r Rules
	for n := 0; len(b) > 0 && n < 64; n++ {
		tag := b[0]
		b = b[1:]
		n := 4
		if tag&0x80 != 0 {
			n = 16
		}
		var raw [16]byte
		k := copy(raw[:n], b)
		b = b[k:]
		var a netip.Addr
		if n == 4 {
			a = netip.AddrFrom4([4]byte(raw[:4]))
		} else {
			a = netip.AddrFrom16(raw)
		}
		bits := int(tag&0x3f) % (n*8 + 1)
		if n == 16 {
			// 0..128 from the 6 bits and the last two address bits.
			bits = int(tag&0x3f)*2 + int(raw[15]&1) + int(raw[14]&1)
		}
		if a.Is4In6() {
			bits = max(bits, 96)
		}
		s := netip.PrefixFrom(a, bits).String()
		if tag&0x40 != 0 {
			r.AllowedIPs = append(r.AllowedIPs, s)
		} else {
			r.BlockedIPs = append(r.BlockedIPs, s)
		}
	}
	return r
}

func FuzzCompileMatch(f *testing.F) {
	v4 := func(tag byte, s string) []byte {
		a := netip.MustParseAddr(s).As4()
		return append([]byte{tag}, a[:]...)
	}
	v6 := func(tag byte, s string) []byte {
		a := netip.MustParseAddr(s).As16()
		return append([]byte{tag}, a[:]...)
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	f.Add(cat(v4(24, "203.0.113.0"), v4(32, "203.0.114.0")), []byte{203, 0, 113, 7})
	f.Add(cat(v4(0x40|8, "10.0.0.0"), v4(16, "10.9.0.0")), []byte{10, 9, 1, 1})
	f.Add(cat(v6(0x80|24, "2001:db8::"), v6(0x80|0x40|32, "2001:db8:1::")), netip.MustParseAddr("2001:db8::1").AsSlice())
	f.Add(cat(v4(0, "0.0.0.0"), v6(0x80, "::")), []byte{255, 255, 255, 255})
	f.Add(cat(v6(0x80|63, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), v4(31, "255.255.255.254")), netip.MustParseAddr("::ffff:1.2.3.4").AsSlice())
	f.Fuzz(func(t *testing.T, rules, query []byte) {
		r := fuzzRules(rules)
		p, err := Compile(r)
		if err != nil {
			t.Fatalf("Compile(%+v): %v", r, err)
		}
		var addrs []netip.Addr
		if a, ok := netip.AddrFromSlice(query); ok {
			addrs = append(addrs, a)
		}
		checkAgainstNaive(t, r, p, addrs)
	})
}

func TestVerdictString(t *testing.T) {
	got := map[Verdict]string{}
	for v := range Verdict(6) {
		got[v] = v.String()
	}
	want := map[Verdict]string{
		OK: "ok", NotAllowed: "not in allow-list", Blocked: "blocked", RateLimited: "rate limited",
		TooManyConnections: "too many connections", 5: "verdict(" + strconv.Itoa(5) + ")",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Verdict strings (-want +got):\n%s", diff)
	}
}

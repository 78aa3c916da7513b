package firewall

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// randomCIDRs returns n random rules, IPv4 and IPv6 mixed, spread over
// the whole address space (unlike randomPrefix, whose rules overlap).
func randomCIDRs(r *rand.Rand, n int) []string {
	out := make([]string, n)
	for i := range out {
		if r.IntN(2) == 0 {
			a := netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
			out[i] = netip.PrefixFrom(a, 16+r.IntN(17)).Masked().String()
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			out[i] = netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(97)).Masked().String()
		}
	}
	return out
}

// benchAddrs returns n client addresses, IPv4 and IPv6 mixed, that p
// admits.
func benchAddrs(r *rand.Rand, p *Policy, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		var a netip.Addr
		if r.IntN(2) == 0 {
			a = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			a = netip.AddrFrom16(b)
		}
		if p.Refuses(a) == OK {
			out = append(out, a)
		}
	}
	return out
}

func BenchmarkAdmitRelease(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 5))
	list := randomCIDRs(r, 10000)
	cidrs := mustCompile(b, Rules{BlockedIPs: list})
	for _, c := range []struct {
		name string
		p    *Policy
	}{
		{"no-policy", nil},
		{"10k-cidrs", cidrs},
		{"10k-cidrs+limits", mustCompile(b, Rules{BlockedIPs: list, MaxConnectionsPerIP: 100, ConnectionRatePerIP: 1 << 30})},
	} {
		addrs := benchAddrs(r, c.p, 1024)
		b.Run(c.name, func(b *testing.B) {
			f := New(nil)
			f.Update(c.p)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				t, v := f.Admit(addrs[i%len(addrs)], nil)
				if v != OK {
					b.Fatal(v)
				}
				t.Release()
				i++
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			f := New(nil)
			f.Update(c.p)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := rand.IntN(len(addrs))
				for pb.Next() {
					t, v := f.Admit(addrs[i%len(addrs)], nil)
					if v != OK {
						b.Error(v)
						return
					}
					t.Release()
					i++
				}
			})
		})
	}
	b.Run("10k-cidrs/blocked", func(b *testing.B) {
		f := New(nil)
		f.Update(cidrs)
		var blocked []netip.Addr
		for _, s := range list[:1024] {
			blocked = append(blocked, netip.MustParsePrefix(s).Addr())
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, v := f.Admit(blocked[i%len(blocked)], nil); v != Blocked {
				b.Fatal(v)
			}
			i++
		}
	})
}

func BenchmarkRefuses10kCIDRs(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 5))
	p := mustCompile(b, Rules{BlockedIPs: randomCIDRs(r, 10000)})
	addrs := benchAddrs(r, nil, 1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Refuses(addrs[i%len(addrs)])
		i++
	}
}

func BenchmarkCompile10kCIDRs(b *testing.B) {
	rules := Rules{BlockedIPs: randomCIDRs(rand.New(rand.NewPCG(3, 5)), 10000)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(rules); err != nil {
			b.Fatal(err)
		}
	}
}

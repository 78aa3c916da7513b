package proxyproto

// Cross-checks of the v2 codec with an independent implementation,
// github.com/pires/go-proxyproto (a test dependency only).

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	pires "github.com/pires/go-proxyproto"
)

// piresAddrs returns h's addresses as the net.Addr type pires uses for p.
func piresAddrs(h Header, p Protocol) (src, dst net.Addr) {
	if p == Datagram {
		return net.UDPAddrFromAddrPort(h.Source), net.UDPAddrFromAddrPort(h.Destination)
	}
	return net.TCPAddrFromAddrPort(h.Source), net.TCPAddrFromAddrPort(h.Destination)
}

// piresAddrPort converts an address pires parsed back to a netip.AddrPort.
func piresAddrPort(t testing.TB, a net.Addr, p Protocol) netip.AddrPort {
	t.Helper()
	switch a := a.(type) {
	case *net.TCPAddr:
		if p == Stream {
			return a.AddrPort()
		}
	case *net.UDPAddr:
		if p == Datagram {
			return a.AddrPort()
		}
	}
	t.Fatalf("pires returned %T %v for %v", a, a, p)
	return netip.AddrPort{}
}

// checkWithPires parses b, which AppendV2 wrote for h and p, with pires and
// compares what it finds with h.
func checkWithPires(t testing.TB, b []byte, h Header, p Protocol) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(append(b, "payload"...)))
	ph, err := pires.Read(r)
	if err != nil {
		t.Fatalf("pires cannot read % x: %v", b, err)
	}
	if rest, _ := r.Peek(r.Buffered()); string(rest) != "payload" {
		t.Fatalf("pires read %d bytes too few or many: %q left", len(rest)-len("payload"), rest)
	}
	is4 := h.Source.Addr().Unmap().Is4() && h.Destination.Addr().Unmap().Is4()
	want := map[[2]bool]pires.AddressFamilyAndProtocol{
		{true, false}: pires.TCPv4, {true, true}: pires.UDPv4,
		{false, false}: pires.TCPv6, {false, true}: pires.UDPv6,
	}[[2]bool{is4, p == Datagram}]
	if ph.Version != 2 || ph.Command != pires.PROXY || ph.TransportProtocol != want {
		t.Fatalf("pires: version %d command %#x family %#x, want 2 PROXY %#x", ph.Version, ph.Command, ph.TransportProtocol, want)
	}
	got := Header{Source: piresAddrPort(t, ph.SourceAddr, p), Destination: piresAddrPort(t, ph.DestinationAddr, p)}
	if diff := cmp.Diff(unmapped(h), unmapped(got), addrCmp); diff != "" {
		t.Fatalf("pires reads % x differently (-want +got):\n%s", b, diff)
	}
}

var piresCases = []struct {
	name string
	h    Header
}{
	{"IPv4", hdr("203.0.113.7:51234", "198.51.100.1:443")},
	{"IPv6", hdr("[2001:db8::1]:40000", "[2001:db8::2]:8443")},
	{"IPv4-mapped both", hdr("[::ffff:203.0.113.7]:1", "[::ffff:198.51.100.1]:2")},
	{"mixed IPv4 and IPv6", hdr("203.0.113.7:0", "[2001:db8::2]:65535")},
	{"mixed IPv6 and mapped", hdr("[2001:db8::1]:1", "[::ffff:198.51.100.1]:65535")},
	{"unspecified", hdr("0.0.0.0:0", "[::]:0")},
}

// AppendV2 writes what pires reads, and byte for byte what pires writes
// for the same addresses.
func TestAppendV2AgreesWithPires(t *testing.T) {
	for _, tc := range piresCases {
		for _, p := range []Protocol{Stream, Datagram} {
			t.Run(tc.name+"/"+p.String(), func(t *testing.T) {
				ours := tc.h.AppendV2(nil, p)
				checkWithPires(t, ours, tc.h, p)
				src, dst := piresAddrs(tc.h, p)
				theirs, err := pires.HeaderProxyFromAddrs(2, src, dst).Format()
				if err != nil {
					t.Fatalf("pires Format: %v", err)
				}
				if !bytes.Equal(ours, theirs) {
					t.Fatalf("AppendV2 =\n% x\npires writes\n% x", ours, theirs)
				}
			})
		}
	}
}

// ParseV2 reads what pires writes, TLVs included.
func TestParseV2ReadsPires(t *testing.T) {
	tlvs := []pires.TLV{
		{Type: pires.PP2_TYPE_ALPN, Value: []byte("h2")},
		{Type: pires.PP2_TYPE_AUTHORITY, Value: []byte("example.com")},
		{Type: pires.PP2_TYPE_NOOP, Value: nil},
	}
	for _, tc := range piresCases {
		for _, p := range []Protocol{Stream, Datagram} {
			for _, withTLVs := range []bool{false, true} {
				name := tc.name + "/" + p.String()
				if withTLVs {
					name += "/TLVs"
				}
				t.Run(name, func(t *testing.T) {
					src, dst := piresAddrs(tc.h, p)
					ph := pires.HeaderProxyFromAddrs(2, src, dst)
					if withTLVs {
						if err := ph.SetTLVs(tlvs); err != nil {
							t.Fatal(err)
						}
					}
					b, err := ph.Format()
					if err != nil {
						t.Fatalf("pires Format: %v", err)
					}
					got, gotP, n, err := ParseV2(append(b, "payload"...))
					if err != nil {
						t.Fatalf("ParseV2(% x): %v", b, err)
					}
					if gotP != p || n != len(b) {
						t.Fatalf("ParseV2: proto %v n %d, want %v %d", gotP, n, p, len(b))
					}
					if diff := cmp.Diff(unmapped(tc.h), unmapped(got), addrCmp); diff != "" {
						t.Fatalf("ParseV2 (-want +got):\n%s", diff)
					}
				})
			}
		}
	}
}

package proxyproto

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// addrCmp compares netip values by ==, which includes the zone and the
// IPv4 / IPv4-mapped distinction.
var addrCmp = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

func tcpAddr(ip string, port int) *net.TCPAddr {
	a := netip.MustParseAddr(ip)
	return &net.TCPAddr{IP: net.IP(a.AsSlice()), Port: port, Zone: a.Zone()}
}

func TestHeaderFor(t *testing.T) {
	tests := []struct {
		name          string
		client, local net.Addr
		want          Header
		line          string
	}{
		{
			name:   "IPv4",
			client: tcpAddr("203.0.113.7", 51234), local: tcpAddr("198.51.100.1", 443),
			want: Header{netip.MustParseAddrPort("203.0.113.7:51234"), netip.MustParseAddrPort("198.51.100.1:443")},
			line: "PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n",
		},
		{
			name:   "IPv4 in 16-byte net.IP form",
			client: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 51234}, local: &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 443},
			want: Header{netip.MustParseAddrPort("203.0.113.7:51234"), netip.MustParseAddrPort("198.51.100.1:443")},
			line: "PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n",
		},
		{
			name:   "IPv6",
			client: tcpAddr("2001:db8::1", 40000), local: tcpAddr("2001:db8::2", 8443),
			want: Header{netip.MustParseAddrPort("[2001:db8::1]:40000"), netip.MustParseAddrPort("[2001:db8::2]:8443")},
			line: "PROXY TCP6 2001:db8::1 2001:db8::2 40000 8443\r\n",
		},
		{
			name:   "IPv4-mapped client and local are written as TCP4",
			client: tcpAddr("::ffff:203.0.113.7", 51234), local: tcpAddr("::ffff:198.51.100.1", 443),
			want: Header{netip.MustParseAddrPort("203.0.113.7:51234"), netip.MustParseAddrPort("198.51.100.1:443")},
			line: "PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n",
		},
		{
			name:   "mixed: IPv4 client, IPv6 local",
			client: tcpAddr("203.0.113.7", 51234), local: tcpAddr("2001:db8::2", 443),
			want: Header{netip.MustParseAddrPort("203.0.113.7:51234"), netip.MustParseAddrPort("[2001:db8::2]:443")},
			line: "PROXY TCP6 ::ffff:203.0.113.7 2001:db8::2 51234 443\r\n",
		},
		{
			name:   "mixed: IPv6 client, mapped local",
			client: tcpAddr("2001:db8::1", 1), local: tcpAddr("::ffff:198.51.100.1", 65535),
			want: Header{netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("198.51.100.1:65535")},
			line: "PROXY TCP6 2001:db8::1 ::ffff:198.51.100.1 1 65535\r\n",
		},
		{
			name:   "zone stripped",
			client: tcpAddr("fe80::1%eth0", 5000), local: tcpAddr("fe80::2%eth0", 80),
			want: Header{netip.MustParseAddrPort("[fe80::1]:5000"), netip.MustParseAddrPort("[fe80::2]:80")},
			line: "PROXY TCP6 fe80::1 fe80::2 5000 80\r\n",
		},
		{
			name:   "port zero",
			client: tcpAddr("127.0.0.1", 0), local: tcpAddr("127.0.0.1", 0),
			want: Header{netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("127.0.0.1:0")},
			line: "PROXY TCP4 127.0.0.1 127.0.0.1 0 0\r\n",
		},
		{
			name:   "UDPAddr (a datagram flow)",
			client: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 7}, local: &net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.2"), Port: 8},
			want: Header{netip.MustParseAddrPort("192.0.2.1:7"), netip.MustParseAddrPort("192.0.2.2:8")},
			line: "PROXY TCP4 192.0.2.1 192.0.2.2 7 8\r\n",
		},
		{
			name:   "other net.Addr with a host:port string",
			client: stringAddr("[fe80::1%eth0]:7"), local: stringAddr("[::ffff:192.0.2.2]:8"),
			want: Header{netip.MustParseAddrPort("[fe80::1]:7"), netip.MustParseAddrPort("192.0.2.2:8")},
			line: "PROXY TCP6 fe80::1 ::ffff:192.0.2.2 7 8\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := HeaderFor(tc.client, tc.local)
			if err != nil {
				t.Fatalf("HeaderFor: %v", err)
			}
			if diff := cmp.Diff(tc.want, h, addrCmp); diff != "" {
				t.Errorf("HeaderFor (-want +got):\n%s", diff)
			}
			if got := string(h.AppendV1(nil)); got != tc.line {
				t.Errorf("AppendV1 = %q, want %q", got, tc.line)
			}
			if got := h.String(); got != tc.line {
				t.Errorf("String = %q, want %q", got, tc.line)
			}
			if got := string(h.AppendV1([]byte("abc"))); got != "abc"+tc.line {
				t.Errorf("AppendV1(prefix) = %q, want %q", got, "abc"+tc.line)
			}
			if len(tc.line) > MaxV1Len {
				t.Fatalf("test line is %d bytes", len(tc.line))
			}
			back, err := ParseV1([]byte(tc.line))
			if err != nil {
				t.Fatalf("ParseV1(%q): %v", tc.line, err)
			}
			if diff := cmp.Diff(unmapped(tc.want), unmapped(back), addrCmp); diff != "" {
				t.Errorf("parsed back (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHeaderForRejectsNonIPAddresses(t *testing.T) {
	good := tcpAddr("192.0.2.1", 1)
	for _, a := range []net.Addr{
		&net.UnixAddr{Name: "/tmp/sock", Net: "unix"},
		&net.IPAddr{IP: net.IPv4(192, 0, 2, 1)},
		&net.TCPAddr{Port: 1},
		&net.UDPAddr{Port: 1},
		stringAddr("192.0.2.1"),
	} {
		if _, err := HeaderFor(a, good); err == nil {
			t.Errorf("HeaderFor(%T %v, ...) accepted", a, a)
		}
		if _, err := HeaderFor(good, a); err == nil {
			t.Errorf("HeaderFor(..., %T %v) accepted", a, a)
		}
	}
}

// stringAddr is a net.Addr of no known type: HeaderFor parses its String.
type stringAddr string

func (a stringAddr) Network() string { return "test" }
func (a stringAddr) String() string  { return string(a) }

// unmapped returns h with both addresses unmapped.
func unmapped(h Header) Header {
	return Header{
		Source:      netip.AddrPortFrom(h.Source.Addr().Unmap(), h.Source.Port()),
		Destination: netip.AddrPortFrom(h.Destination.Addr().Unmap(), h.Destination.Port()),
	}
}

// longMapped is the longest textual IPv6 address netip accepts: 45 bytes.
const longMapped = "0000:0000:0000:0000:0000:ffff:255.255.255.255"

func TestParseV1Accepts(t *testing.T) {
	line107 := "PROXY TCP6 " + longMapped + " " + "000:0000:0000:0000:0000:ffff:1.2.3.4" + " 65535 65535\r\n"
	if len(line107) != MaxV1Len {
		t.Fatalf("line107 is %d bytes", len(line107))
	}
	tests := []struct {
		line string
		want Header
	}{
		{"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n",
			Header{netip.MustParseAddrPort("203.0.113.7:51234"), netip.MustParseAddrPort("198.51.100.1:443")}},
		{"PROXY TCP6 2001:db8::1 2001:db8::2 40000 8443\r\n",
			Header{netip.MustParseAddrPort("[2001:db8::1]:40000"), netip.MustParseAddrPort("[2001:db8::2]:8443")}},
		{"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
			Header{netip.MustParseAddrPort("0.0.0.0:0"), netip.MustParseAddrPort("255.255.255.255:65535")}},
		{"PROXY TCP6 ::ffff:203.0.113.7 2001:db8::2 51234 443\r\n",
			Header{netip.MustParseAddrPort("[::ffff:203.0.113.7]:51234"), netip.MustParseAddrPort("[2001:db8::2]:443")}},
		{"PROXY TCP6 :: ::1 1 9\r\n",
			Header{netip.MustParseAddrPort("[::]:1"), netip.MustParseAddrPort("[::1]:9")}},
		{line107,
			Header{netip.MustParseAddrPort("[::ffff:255.255.255.255]:65535"), netip.MustParseAddrPort("[::ffff:1.2.3.4]:65535")}},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSpace(tc.line), func(t *testing.T) {
			got, err := ParseV1([]byte(tc.line))
			if err != nil {
				t.Fatalf("ParseV1(%q): %v", tc.line, err)
			}
			if diff := cmp.Diff(tc.want, got, addrCmp); diff != "" {
				t.Errorf("ParseV1 (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseV1Rejects(t *testing.T) {
	const ok4 = "PROXY TCP4 203.0.113.7 198.51.100.1 51234 443"
	line108 := "PROXY TCP6 " + longMapped + " " + "0000:0000:0000:0000:0000:ffff:1.2.3.4" + " 65535 65535\r\n"
	if len(line108) != MaxV1Len+1 {
		t.Fatalf("line108 is %d bytes", len(line108))
	}
	tests := []struct{ name, line string }{
		{"empty", ""},
		{"CRLF only", "\r\n"},
		{"missing CRLF", ok4},
		{"LF only", ok4 + "\n"},
		{"CR only", ok4 + "\r"},
		{"LF CR", ok4 + "\n\r"},
		{"trailing byte after CRLF", ok4 + "\r\nX"},
		{"second CRLF", ok4 + "\r\n\r\n"},
		{"request after CRLF", ok4 + "\r\nGET / HTTP/1.1\r\n"},
		{"double space after PROXY", "PROXY  TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"},
		{"double space between addresses", "PROXY TCP4 203.0.113.7  198.51.100.1 51234 443\r\n"},
		{"double space between ports", "PROXY TCP4 203.0.113.7 198.51.100.1 51234  443\r\n"},
		{"leading space", " " + ok4 + "\r\n"},
		{"trailing space", ok4 + " \r\n"},
		{"tab separator", "PROXY TCP4 203.0.113.7\t198.51.100.1 51234 443\r\n"},
		{"missing field", "PROXY TCP4 203.0.113.7 198.51.100.1 51234\r\n"},
		{"extra field", ok4 + " 1\r\n"},
		{"lowercase proxy", "proxy TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"},
		{"lowercase family", "PROXY tcp4 203.0.113.7 198.51.100.1 51234 443\r\n"},
		{"UDP4", "PROXY UDP4 203.0.113.7 198.51.100.1 51234 443\r\n"},
		{"UNKNOWN", "PROXY UNKNOWN\r\n"},
		{"UNKNOWN with addresses", "PROXY UNKNOWN 203.0.113.7 198.51.100.1 51234 443\r\n"},
		{"v2 signature", "\r\n\r\n\x00\r\nQUIT\n"},
		{"source port leading zero", "PROXY TCP4 203.0.113.7 198.51.100.1 051234 443\r\n"},
		{"destination port leading zero", "PROXY TCP4 203.0.113.7 198.51.100.1 51234 0443\r\n"},
		{"port 00", "PROXY TCP4 203.0.113.7 198.51.100.1 00 443\r\n"},
		{"port 65536", "PROXY TCP4 203.0.113.7 198.51.100.1 65536 443\r\n"},
		{"port 99999", "PROXY TCP4 203.0.113.7 198.51.100.1 51234 99999\r\n"},
		{"port six digits", "PROXY TCP4 203.0.113.7 198.51.100.1 100000 443\r\n"},
		{"port with plus", "PROXY TCP4 203.0.113.7 198.51.100.1 +5 443\r\n"},
		{"port negative", "PROXY TCP4 203.0.113.7 198.51.100.1 -5 443\r\n"},
		{"port hex", "PROXY TCP4 203.0.113.7 198.51.100.1 0x1F 443\r\n"},
		{"port letters", "PROXY TCP4 203.0.113.7 198.51.100.1 44a 443\r\n"},
		{"TCP4 with IPv6 addresses", "PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"},
		{"TCP4 with IPv6 destination", "PROXY TCP4 203.0.113.7 2001:db8::2 1 2\r\n"},
		{"TCP4 with mapped addresses", "PROXY TCP4 ::ffff:203.0.113.7 ::ffff:198.51.100.1 1 2\r\n"},
		{"TCP6 with IPv4 addresses", "PROXY TCP6 203.0.113.7 198.51.100.1 1 2\r\n"},
		{"TCP6 with IPv4 source", "PROXY TCP6 203.0.113.7 2001:db8::2 1 2\r\n"},
		{"IPv4 with leading zero", "PROXY TCP4 203.0.113.07 198.51.100.1 1 2\r\n"},
		{"IPv4 out of range", "PROXY TCP4 203.0.113.256 198.51.100.1 1 2\r\n"},
		{"hostname", "PROXY TCP4 localhost 198.51.100.1 1 2\r\n"},
		{"zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n"},
		{"bracketed IPv6", "PROXY TCP6 [2001:db8::1] 2001:db8::2 1 2\r\n"},
		{"NUL in line", "PROXY TCP4 203.0.113.7\x00 198.51.100.1 1 2\r\n"},
		{"longer than 107 bytes", line108},
		{"108 bytes of padding", strings.Repeat("A", 106) + "\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseV1([]byte(tc.line))
			if err == nil {
				t.Fatalf("ParseV1(%q) = %v, want an error", tc.line, got)
			}
			if !errors.Is(err, ErrBadHeader) {
				t.Errorf("error %v does not wrap ErrBadHeader", err)
			}
			if diff := cmp.Diff(Header{}, got, addrCmp); diff != "" {
				t.Errorf("a rejected line returned a value (-want +got):\n%s", diff)
			}
		})
	}
}

// checkV1RoundTrip serializes h, checks the line, parses it back and
// compares the result (after Unmap) with h.
func checkV1RoundTrip(t *testing.T, h Header) []byte {
	t.Helper()
	line := h.AppendV1(nil)
	if len(line) > MaxV1Len {
		t.Fatalf("AppendV1(%v) is %d bytes: %q", h, len(line), line)
	}
	back, err := ParseV1(line)
	if err != nil {
		t.Fatalf("AppendV1(%v) = %q does not parse: %v", h, line, err)
	}
	if diff := cmp.Diff(unmapped(h), unmapped(back), addrCmp); diff != "" {
		t.Fatalf("%q parses to a different header (-want +got):\n%s", line, diff)
	}
	if again := back.AppendV1(nil); string(again) != string(line) {
		t.Fatalf("re-serializing %q gives %q", line, again)
	}
	return line
}

func FuzzParseV1(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 40000 8443\r\n",
		"PROXY TCP6 ::ffff:203.0.113.7 2001:db8::2 51234 443\r\n",
		"PROXY TCP6 ::ffff:1.2.3.4 ::ffff:5.6.7.8 1 2\r\n",
		"PROXY TCP6 " + longMapped + " ::1 65535 65535\r\n",
		"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443",
		"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\n",
		"PROXY TCP4 203.0.113.7  198.51.100.1 51234 443\r\n",
		"PROXY TCP4 203.0.113.7 198.51.100.1 051234 443\r\n",
		"PROXY TCP4 203.0.113.7 198.51.100.1 65536 443\r\n",
		"PROXY TCP4 2001:db8::1 198.51.100.1 1 443\r\n",
		"PROXY UNKNOWN\r\n",
		"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\nX",
		"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseV1(b)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			return
		}
		if len(b) > MaxV1Len {
			t.Fatalf("accepted a %d-byte line", len(b))
		}
		if h.Source.Addr().Zone() != "" || h.Destination.Addr().Zone() != "" {
			t.Fatalf("accepted a zone: %v", h)
		}
		checkV1RoundTrip(t, h)
	})
}

// as16Bytes is the 16-byte form of an address, a seed of the round-trip
// fuzz targets.
func as16Bytes(s string) []byte { a := netip.MustParseAddr(s).As16(); return a[:] }

// fuzzAddrs makes two addresses out of fuzzed bytes: IPv4 from the first 4
// bytes when is4, otherwise IPv6 (IPv4-mapped ones included) from 16.
func fuzzAddrs(srcB, dstB []byte, is4 bool) (src, dst netip.Addr) {
	var s16, d16 [16]byte
	copy(s16[:], srcB)
	copy(d16[:], dstB)
	if is4 {
		return netip.AddrFrom4([4]byte(s16[:4])), netip.AddrFrom4([4]byte(d16[:4]))
	}
	return netip.AddrFrom16(s16), netip.AddrFrom16(d16)
}

func FuzzV1RoundTrip(f *testing.F) {
	v4 := as16Bytes
	f.Add(v4("203.0.113.7"), v4("198.51.100.1"), true, uint16(51234), uint16(443))
	f.Add(v4("2001:db8::1"), v4("2001:db8::2"), false, uint16(40000), uint16(8443))
	f.Add(v4("::ffff:203.0.113.7"), v4("2001:db8::2"), false, uint16(0), uint16(65535))
	f.Add(v4("::ffff:203.0.113.7"), v4("::ffff:198.51.100.1"), false, uint16(1), uint16(2))
	f.Add(v4("1234:5678:9abc:def0:1234:5678:9abc:def0"), v4("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), false, uint16(65535), uint16(65535))
	f.Add([]byte{}, []byte{1}, false, uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, srcB, dstB []byte, is4 bool, sport, dport uint16) {
		src, dst := fuzzAddrs(srcB, dstB, is4)
		h := Header{Source: netip.AddrPortFrom(src, sport), Destination: netip.AddrPortFrom(dst, dport)}
		line := checkV1RoundTrip(t, h)
		wantFam := "PROXY TCP6 "
		if src.Unmap().Is4() && dst.Unmap().Is4() {
			wantFam = "PROXY TCP4 "
		}
		if !strings.HasPrefix(string(line), wantFam) {
			t.Fatalf("%v: line %q, want family %q", h, line, wantFam)
		}

		// The edge's path from accepted sockets gives the same line.
		fromConn, err := HeaderFor(
			&net.TCPAddr{IP: net.IP(src.AsSlice()), Port: int(sport)},
			&net.TCPAddr{IP: net.IP(dst.AsSlice()), Port: int(dport)})
		if err != nil {
			t.Fatalf("HeaderFor: %v", err)
		}
		if got := fromConn.AppendV1(nil); string(got) != string(line) {
			t.Fatalf("HeaderFor gives %q, Header literal %q", got, line)
		}
	})
}

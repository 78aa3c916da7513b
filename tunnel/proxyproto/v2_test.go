package proxyproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// v2Hex decodes a hex string written with spaces between fields.
func v2Hex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const sigHex = "0d0a0d0a000d0a515549540a"

func hdr(src, dst string) Header {
	return Header{Source: netip.MustParseAddrPort(src), Destination: netip.MustParseAddrPort(dst)}
}

func TestAppendV2(t *testing.T) {
	tests := []struct {
		name  string
		h     Header
		proto Protocol
		want  string // hex
		back  Header // what ParseV2 returns for it
	}{
		{
			name: "TCP over IPv4", h: hdr("203.0.113.7:51234", "198.51.100.1:443"), proto: Stream,
			want: sigHex + "21 11 000c cb007107 c6336401 c822 01bb",
			back: hdr("203.0.113.7:51234", "198.51.100.1:443"),
		},
		{
			name: "UDP over IPv4", h: hdr("203.0.113.7:51234", "198.51.100.1:3478"), proto: Datagram,
			want: sigHex + "21 12 000c cb007107 c6336401 c822 0d96",
			back: hdr("203.0.113.7:51234", "198.51.100.1:3478"),
		},
		{
			name: "TCP over IPv6", h: hdr("[2001:db8::1]:40000", "[2001:db8::2]:8443"), proto: Stream,
			want: sigHex + "21 21 0024 20010db8000000000000000000000001 20010db8000000000000000000000002 9c40 20fb",
			back: hdr("[2001:db8::1]:40000", "[2001:db8::2]:8443"),
		},
		{
			name: "UDP over IPv6", h: hdr("[2001:db8::1]:1", "[2001:db8::2]:65535"), proto: Datagram,
			want: sigHex + "21 22 0024 20010db8000000000000000000000001 20010db8000000000000000000000002 0001 ffff",
			back: hdr("[2001:db8::1]:1", "[2001:db8::2]:65535"),
		},
		{
			name: "IPv4-mapped on both sides is written as INET", h: hdr("[::ffff:203.0.113.7]:1", "[::ffff:198.51.100.1]:2"), proto: Stream,
			want: sigHex + "21 11 000c cb007107 c6336401 0001 0002",
			back: hdr("203.0.113.7:1", "198.51.100.1:2"),
		},
		{
			name: "mixed families are written as INET6", h: hdr("203.0.113.7:1", "[2001:db8::2]:2"), proto: Datagram,
			want: sigHex + "21 22 0024 00000000000000000000ffffcb007107 20010db8000000000000000000000002 0001 0002",
			back: hdr("[::ffff:203.0.113.7]:1", "[2001:db8::2]:2"),
		},
		{
			name: "zero ports and addresses", h: hdr("0.0.0.0:0", "0.0.0.0:0"), proto: Stream,
			want: sigHex + "21 11 000c 00000000 00000000 0000 0000",
			back: hdr("0.0.0.0:0", "0.0.0.0:0"),
		},
		{
			name: "an invalid address is written as ::", h: Header{Destination: netip.MustParseAddrPort("198.51.100.1:2")}, proto: Stream,
			want: sigHex + "21 21 0024 00000000000000000000000000000000 00000000000000000000ffffc6336401 0000 0002",
			back: hdr("[::]:0", "[::ffff:198.51.100.1]:2"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := v2Hex(t, tc.want)
			got := tc.h.AppendV2(nil, tc.proto)
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendV2 =\n% x\nwant\n% x", got, want)
			}
			if len(got) > MaxV2Len {
				t.Fatalf("%d bytes, more than MaxV2Len", len(got))
			}
			if got := tc.h.AppendV2([]byte("abc"), tc.proto); string(got) != "abc"+string(want) {
				t.Fatalf("AppendV2(prefix) = % x", got)
			}
			back, proto, n, err := ParseV2(append(got, "payload"...))
			if err != nil {
				t.Fatalf("ParseV2: %v", err)
			}
			if n != len(want) || proto != tc.proto {
				t.Fatalf("ParseV2: n %d proto %v, want %d %v", n, proto, len(want), tc.proto)
			}
			if diff := cmp.Diff(tc.back, back, addrCmp); diff != "" {
				t.Fatalf("ParseV2 (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMaxV2Len(t *testing.T) {
	if MaxV2Len != v2FixedLen+v2AddrLen6 {
		t.Fatalf("MaxV2Len = %d, want %d", MaxV2Len, v2FixedLen+v2AddrLen6)
	}
}

func TestAppendV2PanicsOnUnknownProtocol(t *testing.T) {
	for _, p := range []Protocol{0, 3, 0x11} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AppendV2(%v) did not panic", p)
				}
			}()
			hdr("192.0.2.1:1", "192.0.2.2:2").AppendV2(nil, p)
		}()
	}
}

func TestProtocolString(t *testing.T) {
	for p, want := range map[Protocol]string{Stream: "STREAM", Datagram: "DGRAM", 0: "Protocol(0)", 7: "Protocol(7)"} {
		if got := p.String(); got != want {
			t.Errorf("Protocol(%d).String() = %q, want %q", uint8(p), got, want)
		}
	}
}

func TestParseV2Accepts(t *testing.T) {
	const v4 = sigHex + "21 11 000c cb007107 c6336401 c822 01bb"
	tests := []struct {
		name  string
		in    string // hex
		want  Header
		proto Protocol
		n     int
	}{
		{"exact", v4, hdr("203.0.113.7:51234", "198.51.100.1:443"), Stream, 28},
		{"followed by payload", v4 + "474554202f", hdr("203.0.113.7:51234", "198.51.100.1:443"), Stream, 28},
		{"TLVs skipped", sigHex + "21 12 0018 cb007107 c6336401 c822 01bb 01 0002 6832 04 0000 30 0001 ff" + "aa",
			hdr("203.0.113.7:51234", "198.51.100.1:443"), Datagram, 16 + 24},
		{"IPv4-mapped INET6 stays mapped", sigHex + "21 21 0024 00000000000000000000ffffcb007107 00000000000000000000ffffc6336401 0001 0002",
			hdr("[::ffff:203.0.113.7]:1", "[::ffff:198.51.100.1]:2"), Stream, 52},
		{"INET6 DGRAM", sigHex + "21 22 0024 20010db8000000000000000000000001 20010db8000000000000000000000002 0001 ffff",
			hdr("[2001:db8::1]:1", "[2001:db8::2]:65535"), Datagram, 52},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, p, n, err := ParseV2(v2Hex(t, tc.in))
			if err != nil {
				t.Fatalf("ParseV2: %v", err)
			}
			if diff := cmp.Diff(tc.want, h, addrCmp); diff != "" {
				t.Errorf("ParseV2 (-want +got):\n%s", diff)
			}
			if p != tc.proto || n != tc.n {
				t.Errorf("proto %v n %d, want %v %d", p, n, tc.proto, tc.n)
			}
		})
	}
}

func TestParseV2Rejects(t *testing.T) {
	const (
		addr4 = "cb007107 c6336401 c822 01bb"
		addr6 = "20010db8000000000000000000000001 20010db8000000000000000000000002 9c40 20fb"
	)
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"signature only", sigHex},
		{"fixed part cut short", sigHex + "21 11 00"},
		{"no address block", sigHex + "21 11 000c"},
		{"address block cut short", sigHex + "21 11 000c cb007107 c6336401 c822"},
		{"bad signature", "0d0a0d0a000d0a515549540b 21 11 000c " + addr4},
		{"v1 line", hex.EncodeToString([]byte("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"))},
		{"version 1", sigHex + "11 11 000c " + addr4},
		{"version 3", sigHex + "31 11 000c " + addr4},
		{"version 0", sigHex + "01 11 000c " + addr4},
		{"command LOCAL", sigHex + "20 00 0000"},
		{"command LOCAL with addresses", sigHex + "20 11 000c " + addr4},
		{"unknown command 2", sigHex + "22 11 000c " + addr4},
		{"unknown command 15", sigHex + "2f 11 000c " + addr4},
		{"family UNSPEC", sigHex + "21 01 000c " + addr4},
		{"family UNIX", sigHex + "21 31 00d8 " + strings.Repeat("00", 216)},
		{"family 4", sigHex + "21 41 000c " + addr4},
		{"family 15", sigHex + "21 f1 000c " + addr4},
		{"transport UNSPEC", sigHex + "21 10 000c " + addr4},
		{"transport 3", sigHex + "21 13 000c " + addr4},
		{"transport 15", sigHex + "21 1f 000c " + addr4},
		{"INET length 11", sigHex + "21 11 000b " + addr4},
		{"INET length 0", sigHex + "21 11 0000 " + addr4},
		{"INET6 length 35", sigHex + "21 21 0023 " + addr6},
		{"INET6 announced, INET block", sigHex + "21 21 000c " + addr4},
		{"length beyond the input", sigHex + "21 11 000d " + addr4},
		{"length 65535, input short", sigHex + "21 11 ffff " + addr4},
		{"TLV header cut short", sigHex + "21 11 000e " + addr4 + "01 00"},
		{"TLV value cut short", sigHex + "21 11 0010 " + addr4 + "01 0002 68"},
		{"TLV value beyond length", sigHex + "21 11 0010 " + addr4 + "01 0002 68 32"},
		{"second TLV cut short", sigHex + "21 11 0012 " + addr4 + "01 0001 68 04 00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, p, n, err := ParseV2(v2Hex(t, tc.in))
			if err == nil {
				t.Fatalf("ParseV2(%s) = %v %v %d, want an error", tc.in, h, p, n)
			}
			if !errors.Is(err, ErrBadHeader) {
				t.Errorf("error %v does not wrap ErrBadHeader", err)
			}
			if h != (Header{}) || p != 0 || n != 0 {
				t.Errorf("a rejected header returned %v %v %d", h, p, n)
			}
		})
	}
}

// The parsers do not take each other's headers.
func TestParsersRejectTheOtherVersion(t *testing.T) {
	h := hdr("203.0.113.7:51234", "198.51.100.1:443")
	if _, err := ParseV1(h.AppendV2(nil, Stream)); err == nil {
		t.Error("ParseV1 accepted a v2 header")
	}
	if _, _, _, err := ParseV2(h.AppendV1(nil)); err == nil {
		t.Error("ParseV2 accepted a v1 line")
	}
}

// canonicalV2 reports whether AppendV2 writes b exactly for what ParseV2
// returns: no TLVs, and no INET6 block holding two IPv4(-mapped) addresses.
func canonicalV2(b []byte, h Header) bool {
	length := int(b[14])<<8 | int(b[15])
	if b[13]&0xf0 == v2FamINET6 {
		return length == v2AddrLen6 && !(h.Source.Addr().Unmap().Is4() && h.Destination.Addr().Unmap().Is4())
	}
	return length == v2AddrLen4
}

func FuzzParseV2(f *testing.F) {
	for _, s := range []string{
		sigHex + "21 11 000c cb007107 c6336401 c822 01bb",
		sigHex + "21 12 000c cb007107 c6336401 c822 01bb 6461746167726d",
		sigHex + "21 21 0024 20010db8000000000000000000000001 20010db8000000000000000000000002 9c40 20fb",
		sigHex + "21 22 0024 00000000000000000000ffffcb007107 00000000000000000000ffffc6336401 0001 0002",
		sigHex + "21 12 0018 cb007107 c6336401 c822 01bb 01 0002 6832 04 0000 30 0001 ff",
		sigHex + "21 11 0010 cb007107 c6336401 c822 01bb 01 0002 68",
		sigHex + "20 00 0000",
		sigHex + "21 31 000c cb007107 c6336401 c822 01bb",
		sigHex + "21 11 000b cb007107 c6336401 c822 01bb",
		sigHex + "21 11 ffff cb007107 c6336401 c822 01bb",
		sigHex,
		"",
	} {
		f.Add(v2Hex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, n, err := ParseV2(b)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			return
		}
		if n < v2FixedLen+v2AddrLen4 || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if p != Stream && p != Datagram {
			t.Fatalf("protocol %v", p)
		}
		if h.Source.Addr().Zone() != "" || h.Destination.Addr().Zone() != "" {
			t.Fatalf("a zone: %v", h)
		}
		// The header alone parses the same; what follows it does not matter.
		if h2, p2, n2, err := ParseV2(b[:n]); err != nil || h2 != h || p2 != p || n2 != n {
			t.Fatalf("ParseV2(b[:n]) = %v %v %d %v, want %v %v %d", h2, p2, n2, err, h, p, n)
		}
		again := h.AppendV2(nil, p)
		if canonicalV2(b, h) && !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding\n% x\ngives\n% x", b[:n], again)
		}
		back, p3, n3, err := ParseV2(again)
		if err != nil || p3 != p || n3 != len(again) {
			t.Fatalf("re-encoded % x: %v %d %v", again, p3, n3, err)
		}
		if diff := cmp.Diff(unmapped(h), unmapped(back), addrCmp); diff != "" {
			t.Fatalf("re-encoded header differs (-want +got):\n%s", diff)
		}
	})
}

func FuzzV2RoundTrip(f *testing.F) {
	a16 := as16Bytes
	f.Add(a16("203.0.113.7"), a16("198.51.100.1"), true, uint16(51234), uint16(443), false)
	f.Add(a16("2001:db8::1"), a16("2001:db8::2"), false, uint16(40000), uint16(8443), true)
	f.Add(a16("::ffff:203.0.113.7"), a16("2001:db8::2"), false, uint16(0), uint16(65535), false)
	f.Add(a16("::ffff:203.0.113.7"), a16("::ffff:198.51.100.1"), false, uint16(1), uint16(2), true)
	f.Add([]byte{}, []byte{1}, false, uint16(0), uint16(0), false)
	f.Fuzz(func(t *testing.T, srcB, dstB []byte, is4 bool, sport, dport uint16, dgram bool) {
		src, dst := fuzzAddrs(srcB, dstB, is4)
		p := Stream
		if dgram {
			p = Datagram
		}
		h := Header{Source: netip.AddrPortFrom(src, sport), Destination: netip.AddrPortFrom(dst, dport)}
		b := h.AppendV2(nil, p)
		wantFam := byte(v2FamINET6)
		if src.Unmap().Is4() && dst.Unmap().Is4() {
			wantFam = v2FamINET
		}
		if b[13] != wantFam|byte(p) {
			t.Fatalf("%v: family byte %#x, want %#x", h, b[13], wantFam|byte(p))
		}
		back, p2, n, err := ParseV2(b)
		if err != nil || p2 != p || n != len(b) || len(b) > MaxV2Len {
			t.Fatalf("% x: %v %d %v", b, p2, n, err)
		}
		if diff := cmp.Diff(unmapped(h), unmapped(back), addrCmp); diff != "" {
			t.Fatalf("parsed back (-want +got):\n%s", diff)
		}
		if again := back.AppendV2(nil, p); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding % x gives % x", b, again)
		}
		checkWithPires(t, b, h, p)
	})
}

package proxyproto

import (
	"bytes"
	"net/netip"
	"strconv"
)

// MaxV1Len is the longest PROXY v1 line the specification allows, CRLF
// included.
const MaxV1Len = 107

// AppendV1 appends the v1 line ("PROXY TCP4 ..." with CRLF) to dst. When
// the two addresses are of different families both are written as IPv6.
func (h Header) AppendV1(dst []byte) []byte {
	src, dstA := h.Source.Addr().Unmap(), h.Destination.Addr().Unmap()
	fam := "TCP4"
	if !src.Is4() || !dstA.Is4() {
		fam = "TCP6"
		src, dstA = as16(src), as16(dstA)
	}
	dst = append(dst, "PROXY "...)
	dst = append(dst, fam...)
	dst = append(dst, ' ')
	dst = src.AppendTo(dst)
	dst = append(dst, ' ')
	dst = dstA.AppendTo(dst)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(h.Source.Port()), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(h.Destination.Port()), 10)
	return append(dst, '\r', '\n')
}

// as16 turns an IPv4 address into its IPv4-mapped IPv6 form; it must be
// printed in IPv6 notation, which netip does for mapped addresses.
func as16(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom16(a.As16())
	}
	return a
}

// String is the v1 line including CRLF.
func (h Header) String() string { return string(h.AppendV1(nil)) }

// ParseV1 parses one complete PROXY v1 TCP4/TCP6 line (with CRLF and
// nothing after it), strictly: single spaces, canonical numbers, matching
// address families. "PROXY UNKNOWN" is rejected: the edge always knows.
// Every error wraps ErrBadHeader.
func ParseV1(b []byte) (Header, error) {
	fail := func(why string) (Header, error) { return Header{}, bad("v1", why) }
	if len(b) > MaxV1Len {
		return fail("longer than 107 bytes")
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return fail("does not end in CRLF")
	}
	f := bytes.Split(b[:len(b)-2], []byte{' '})
	if len(f) != 6 || string(f[0]) != "PROXY" {
		return fail("want PROXY <family> <src> <dst> <sport> <dport>")
	}
	var want4 bool
	switch string(f[1]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return fail("family must be TCP4 or TCP6")
	}
	src, err1 := netip.ParseAddr(string(f[2]))
	dst, err2 := netip.ParseAddr(string(f[3]))
	if err1 != nil || err2 != nil || src.Zone() != "" || dst.Zone() != "" {
		return fail("invalid address")
	}
	if want4 != src.Is4() || want4 != dst.Is4() {
		return fail("address family does not match " + string(f[1]))
	}
	sp, ok1 := parsePort(f[4])
	dp, ok2 := parsePort(f[5])
	if !ok1 || !ok2 {
		return fail("invalid port")
	}
	return Header{Source: netip.AddrPortFrom(src, sp), Destination: netip.AddrPortFrom(dst, dp)}, nil
}

// parsePort accepts 0-65535 written without sign or leading zeros.
func parsePort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// MaxProxyHeaderLen is the longest PROXY v1 line the specification allows,
// CRLF included.
const MaxProxyHeaderLen = 107

// ProxyHeader is a PROXY protocol v1 header for a TCP connection.
type ProxyHeader struct {
	Source      netip.AddrPort // the client
	Destination netip.AddrPort // the address the client connected to
}

// ProxyHeaderFor builds the header for a connection accepted by the edge:
// the client is the remote address, the destination the local one.
// IPv4-mapped IPv6 addresses are written as IPv4.
func ProxyHeaderFor(client, local net.Addr) (ProxyHeader, error) {
	src, err := addrPortOf(client)
	if err != nil {
		return ProxyHeader{}, err
	}
	dst, err := addrPortOf(local)
	if err != nil {
		return ProxyHeader{}, err
	}
	return ProxyHeader{Source: src, Destination: dst}, nil
}

func addrPortOf(a net.Addr) (netip.AddrPort, error) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), nil
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("proxy header: not a TCP address: %q", a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), nil
}

// AppendTo appends the header line (with CRLF) to dst. When the two
// addresses are of different families both are written as IPv6.
func (h ProxyHeader) AppendTo(dst []byte) []byte {
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

// String is the header line including CRLF.
func (h ProxyHeader) String() string { return string(h.AppendTo(nil)) }

// ErrBadProxyHeader is wrapped by every ParseProxyHeader error.
var ErrBadProxyHeader = errors.New("bad PROXY v1 header")

// ParseProxyHeader parses one complete PROXY v1 TCP4/TCP6 line (with CRLF and
// nothing after it), strictly: single spaces, canonical numbers, matching
// address families. "PROXY UNKNOWN" is rejected: the edge always knows.
func ParseProxyHeader(b []byte) (ProxyHeader, error) {
	bad := func(why string) (ProxyHeader, error) {
		return ProxyHeader{}, fmt.Errorf("%w: %s", ErrBadProxyHeader, why)
	}
	if len(b) > MaxProxyHeaderLen {
		return bad("longer than 107 bytes")
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return bad("does not end in CRLF")
	}
	f := bytes.Split(b[:len(b)-2], []byte{' '})
	if len(f) != 6 || string(f[0]) != "PROXY" {
		return bad("want PROXY <family> <src> <dst> <sport> <dport>")
	}
	var want4 bool
	switch string(f[1]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return bad("family must be TCP4 or TCP6")
	}
	src, err1 := netip.ParseAddr(string(f[2]))
	dst, err2 := netip.ParseAddr(string(f[3]))
	if err1 != nil || err2 != nil || src.Zone() != "" || dst.Zone() != "" {
		return bad("invalid address")
	}
	if want4 != src.Is4() || want4 != dst.Is4() {
		return bad("address family does not match " + string(f[1]))
	}
	sp, ok1 := parsePort(f[4])
	dp, ok2 := parsePort(f[5])
	if !ok1 || !ok2 {
		return bad("invalid port")
	}
	return ProxyHeader{Source: netip.AddrPortFrom(src, sp), Destination: netip.AddrPortFrom(dst, dp)}, nil
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

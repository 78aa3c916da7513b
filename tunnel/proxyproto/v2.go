package proxyproto

import (
	"encoding/binary"
	"net/netip"
	"strconv"
)

// Protocol is the transport a v2 header announces (the low nibble of its
// family byte).
type Protocol uint8

// The transports of a v2 header.
const (
	Stream   Protocol = 0x1 // STREAM: TCP
	Datagram Protocol = 0x2 // DGRAM: UDP
)

// String is the specification's name of p: "STREAM" or "DGRAM".
func (p Protocol) String() string {
	switch p {
	case Stream:
		return "STREAM"
	case Datagram:
		return "DGRAM"
	}
	return "Protocol(" + strconv.Itoa(int(p)) + ")"
}

// The v2 wire format: a 16-byte fixed part, then the address block, then
// optional TLVs; length counts everything after the fixed part.
const (
	v2Signature  = "\r\n\r\n\x00\r\nQUIT\n"
	v2FixedLen   = len(v2Signature) + 4 // signature, ver_cmd, fam, length (u16)
	v2VersionCmd = 0x21                 // version 2, command PROXY
	v2Local      = 0x20                 // version 2, command LOCAL
	v2FamINET    = 0x10
	v2FamINET6   = 0x20
	v2AddrLen4   = 4 + 4 + 2 + 2   // src, dst, src port, dst port
	v2AddrLen6   = 16 + 16 + 2 + 2 // likewise for INET6
)

// MaxV2Len is the longest header AppendV2 writes: the 16-byte fixed part
// and an INET6 address block, no TLVs.
const MaxV2Len = 52

// AppendV2 appends the binary v2 header to dst: command PROXY, transport
// p, no TLVs. Both addresses are written as INET when both are IPv4 (or
// IPv4-mapped), otherwise both as INET6 (IPv4 ones in their mapped form),
// as AppendV1 does; an invalid (zero) address is written as the IPv6
// unspecified address "::". AppendV2 panics if p is neither Stream nor
// Datagram.
func (h Header) AppendV2(dst []byte, p Protocol) []byte {
	if p != Stream && p != Datagram {
		panic("proxyproto: AppendV2 with unknown protocol " + p.String())
	}
	src, dstA := h.Source.Addr().Unmap(), h.Destination.Addr().Unmap()
	dst = append(dst, v2Signature...)
	if src.Is4() && dstA.Is4() {
		s, d := src.As4(), dstA.As4()
		dst = append(dst, v2VersionCmd, v2FamINET|byte(p), 0, v2AddrLen4)
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
	} else {
		s, d := src.As16(), dstA.As16()
		dst = append(dst, v2VersionCmd, v2FamINET6|byte(p), 0, v2AddrLen6)
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
	}
	dst = binary.BigEndian.AppendUint16(dst, h.Source.Port())
	return binary.BigEndian.AppendUint16(dst, h.Destination.Port())
}

// ParseV2 parses the v2 header at the start of b, which must hold all of
// it; n is its length, so b[n:] is what follows (the payload of a datagram,
// or the first bytes of a stream). It accepts only command PROXY with
// family INET or INET6 and transport STREAM or DGRAM. The LOCAL command is
// rejected, like "PROXY UNKNOWN" by ParseV1: the edge always knows the
// addresses, and a header without them would describe nothing. TLVs after
// the address block are skipped, but they must be a whole sequence of
// type-length-value records within the announced length. INET6 addresses
// are returned as written, so an IPv4-mapped one stays mapped. Every error
// wraps ErrBadHeader.
func ParseV2(b []byte) (h Header, p Protocol, n int, err error) {
	fail := func(why string) (Header, Protocol, int, error) { return Header{}, 0, 0, bad("v2", why) }
	if len(b) < v2FixedLen {
		return fail("shorter than the 16-byte fixed part")
	}
	if string(b[:len(v2Signature)]) != v2Signature {
		return fail("no v2 signature")
	}
	switch verCmd := b[12]; {
	case verCmd>>4 != 2:
		return fail("version " + strconv.Itoa(int(verCmd>>4)) + ", want 2")
	case verCmd == v2Local:
		return fail("command LOCAL: no addresses")
	case verCmd != v2VersionCmd:
		return fail("unknown command " + strconv.Itoa(int(verCmd&0xf)))
	}
	fam, p := b[13]&0xf0, Protocol(b[13]&0x0f)
	if p != Stream && p != Datagram {
		return fail("transport must be STREAM or DGRAM")
	}
	var addrLen int
	switch fam {
	case v2FamINET:
		addrLen = v2AddrLen4
	case v2FamINET6:
		addrLen = v2AddrLen6
	default:
		return fail("family must be INET or INET6")
	}
	length := int(binary.BigEndian.Uint16(b[14:16]))
	if length < addrLen {
		return fail("length " + strconv.Itoa(length) + " is shorter than the address block")
	}
	n = v2FixedLen + length
	if len(b) < n {
		return fail("truncated: length " + strconv.Itoa(length) + " but " + strconv.Itoa(len(b)-v2FixedLen) + " bytes follow")
	}
	if !wholeTLVs(b[v2FixedLen+addrLen : n]) {
		return fail("malformed TLVs")
	}
	a := b[v2FixedLen:]
	var src, dst netip.Addr
	if fam == v2FamINET {
		src, dst = netip.AddrFrom4([4]byte(a[0:4])), netip.AddrFrom4([4]byte(a[4:8]))
	} else {
		src, dst = netip.AddrFrom16([16]byte(a[0:16])), netip.AddrFrom16([16]byte(a[16:32]))
	}
	ports := a[addrLen-4 : addrLen]
	h = Header{
		Source:      netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports[0:2])),
		Destination: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:4])),
	}
	return h, p, n, nil
}

// wholeTLVs reports whether b is a sequence of complete TLVs: a type byte,
// a big-endian u16 length and that many bytes of value, each.
func wholeTLVs(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 3 {
			return false
		}
		l := 3 + int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < l {
			return false
		}
		b = b[l:]
	}
	return true
}

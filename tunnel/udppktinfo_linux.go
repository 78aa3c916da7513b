package tunnel

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// The address a client sent to, for an edge UDP port bound to a wildcard
// address: the kernel tells it with each datagram (IP_PKTINFO,
// IPV6_PKTINFO; an IPv6 socket that also takes IPv4 gives IPv4 ones
// mapped), and a reply names it as its source, so that it leaves from the
// address the client sent to. It is on for every port, so that one code
// path serves specific and wildcard addresses alike.

// pktinfoOOB is room for the control message of one datagram.
const pktinfoOOB = 64

// enablePktinfo asks the kernel for the destination of each datagram of
// uc; it returns whether the socket is IPv6 and whether it worked.
func enablePktinfo(uc *net.UDPConn) (v6, ok bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return false, false
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		var dom int
		dom, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_DOMAIN)
		if serr != nil {
			return
		}
		v6 = dom == syscall.AF_INET6
		if v6 {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1)
		} else {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
		}
	})
	return v6, cerr == nil && serr == nil
}

// parsePktinfo finds the destination address in the control messages of
// one datagram; invalid if there is none.
func parsePktinfo(oob []byte) netip.Addr {
	for len(oob) >= syscall.SizeofCmsghdr {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < syscall.SizeofCmsghdr || l > len(oob) {
			return netip.Addr{}
		}
		data := oob[syscall.SizeofCmsghdr:l]
		switch {
		case h.Level == syscall.IPPROTO_IP && h.Type == syscall.IP_PKTINFO && len(data) >= syscall.SizeofInet4Pktinfo:
			return netip.AddrFrom4([4]byte(data[8:12])) // ipi_addr: the header's destination
		case h.Level == syscall.IPPROTO_IPV6 && h.Type == syscall.IPV6_PKTINFO && len(data) >= syscall.SizeofInet6Pktinfo:
			return netip.AddrFrom16([16]byte(data[:16])).Unmap()
		}
		next := syscall.CmsgSpace(l - syscall.SizeofCmsghdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return netip.Addr{}
}

// appendPktinfoSrc appends the control message that makes src the source
// of a datagram sent on a socket of the family v6 says.
func appendPktinfoSrc(dst []byte, src netip.Addr, v6 bool) []byte {
	var data []byte
	var h syscall.Cmsghdr
	if v6 {
		var pi [syscall.SizeofInet6Pktinfo]byte
		a := src.As16() // IPv4 in its mapped form: the kernel sends it as IPv4
		copy(pi[:16], a[:])
		data = pi[:]
		h.Level, h.Type = syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO
	} else {
		var pi [syscall.SizeofInet4Pktinfo]byte
		a := src.Unmap().As4()
		copy(pi[4:8], a[:]) // ipi_spec_dst: the source to use
		data = pi[:]
		h.Level, h.Type = syscall.IPPROTO_IP, syscall.IP_PKTINFO
	}
	h.SetLen(syscall.CmsgLen(len(data)))
	off := len(dst)
	dst = append(dst, make([]byte, syscall.CmsgSpace(len(data)))...)
	*(*syscall.Cmsghdr)(unsafe.Pointer(&dst[off])) = h
	copy(dst[off+syscall.SizeofCmsghdr:], data)
	return dst
}

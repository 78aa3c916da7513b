//go:build linux && (amd64 || arm64)

package tunnel

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// udpBatchLen is how many datagrams one recvmmsg(2) takes at most: a burst
// of datagrams costs one system call, and what the reader hands on in one
// go reaches the tunnel's writer (and QUIC's packer) together.
const udpBatchLen = 16

// mmsghdr is struct mmsghdr of 64-bit Linux.
type mmsghdr struct {
	hdr syscall.Msghdr
	len uint32
	_   [4]byte
}

// portReader reads an edge UDP port's datagrams, up to udpBatchLen per
// system call. Its buffers are taken at the first read, so a port never
// read holds none (untouched pages of them are not resident either).
type portReader struct {
	pc      *net.UDPConn
	pktinfo bool
	rc      syscall.RawConn
	hdrs    [udpBatchLen]mmsghdr
	iovs    [udpBatchLen]syscall.Iovec
	names   [udpBatchLen]syscall.RawSockaddrInet6
	oobs    [udpBatchLen][pktinfoOOB]byte
	bufs    []byte // udpBatchLen slots of MaxDatagram+1 bytes
}

func newPortReader(pc *net.UDPConn, pktinfo bool) *portReader {
	return &portReader{pc: pc, pktinfo: pktinfo}
}

// read waits for datagrams and takes those the kernel has, up to
// udpBatchLen; it returns how many (msg gives each).
func (r *portReader) read() (int, error) {
	if r.rc == nil {
		rc, err := r.pc.SyscallConn()
		if err != nil {
			return 0, err
		}
		r.rc = rc
		r.bufs = make([]byte, udpBatchLen*(MaxDatagram+1))
	}
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for i := range r.hdrs {
			r.iovs[i].Base = &r.bufs[i*(MaxDatagram+1)]
			r.iovs[i].SetLen(MaxDatagram + 1)
			h := &r.hdrs[i].hdr
			h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
			h.Namelen = syscall.SizeofSockaddrInet6
			h.Iov = &r.iovs[i]
			h.Iovlen = 1
			h.Control, h.Controllen = nil, 0
			if r.pktinfo {
				h.Control = &r.oobs[i][0]
				h.SetControllen(pktinfoOOB)
			}
			h.Flags = 0
		}
		for {
			r0, _, e := syscall.Syscall6(syscall.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), udpBatchLen, 0, 0, 0)
			if e == syscall.EINTR {
				continue
			}
			if e == syscall.EAGAIN {
				return false // wait for readability
			}
			n, errno = int(r0), e
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// msg is datagram i of the last read: its bytes (MaxDatagram+1 of them
// when it was larger than a UDP datagram may be), its source and its
// control messages.
func (r *portReader) msg(i int) (b []byte, from netip.AddrPort, oob []byte) {
	h := &r.hdrs[i]
	b = r.bufs[i*(MaxDatagram+1) : i*(MaxDatagram+1)+int(h.len)]
	sa := &r.names[i]
	switch sa.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		from = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		from = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	if r.pktinfo {
		oob = r.oobs[i][:h.hdr.Controllen]
	}
	return b, from, oob
}

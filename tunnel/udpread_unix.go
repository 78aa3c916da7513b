//go:build unix

package tunnel

import (
	"net"
	"net/netip"
	"syscall"
)

// readDatagramPooled reads one datagram from uc, a connected UDP socket,
// into a pooled buffer it takes only once the kernel has a datagram: an
// idle flow holds no read buffer while it waits. The caller releases bp.
func readDatagramPooled(uc *net.UDPConn) (bp *[]byte, n int, err error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		b := getBuf(MaxDatagram + 1)
		for {
			n, _, rerr = syscall.Recvfrom(int(fd), *b, 0)
			if rerr == syscall.EINTR {
				continue
			}
			break
		}
		if rerr == syscall.EAGAIN {
			putBuf(b)
			return false
		}
		bp = b
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		if bp != nil {
			putBuf(bp)
		}
		return nil, 0, err
	}
	return bp, n, nil
}

// writeDatagramNoWait sends p on uc, a connected UDP socket, if the kernel
// takes it now; a datagram that would have to wait for room is dropped
// (false), so that the tunnel's reader, which writes it, never waits.
func writeDatagramNoWait(uc *net.UDPConn, p []byte) bool {
	rc, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Write(func(fd uintptr) bool {
		for {
			_, err := syscall.Write(int(fd), p)
			if err == syscall.EINTR {
				continue
			}
			ok = err == nil
			return true // never wait
		}
	})
	return ok
}

// udpDest is a datagram's destination as sendToNoWait takes it.
type udpDest = syscall.Sockaddr

// sockaddrOf is a for a socket of the family v6 says (IPv4 mapped there).
func sockaddrOf(a netip.AddrPort, v6 bool) udpDest {
	if v6 {
		return &syscall.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
	}
	return &syscall.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().Unmap().As4()}
}

// sendToNoWait sends p to sa with the control messages oob from pc if the
// kernel takes it now; else it is dropped (false).
func sendToNoWait(pc *net.UDPConn, p, oob []byte, sa udpDest) bool {
	rc, err := pc.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Write(func(fd uintptr) bool {
		for {
			err := syscall.Sendmsg(int(fd), p, oob, sa, 0)
			if err == syscall.EINTR {
				continue
			}
			ok = err == nil
			return true
		}
	})
	return ok
}

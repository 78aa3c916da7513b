//go:build unix

package tunnel

import (
	"net"
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

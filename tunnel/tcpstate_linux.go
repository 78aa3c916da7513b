package tunnel

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// wasReset reports whether the peer of c reset the connection. After a
// reset, Linux reports ECONNRESET to the first read or write only; later
// reads see a plain EOF. The TCP state tells the two apart: a FIN leaves the
// socket in CLOSE_WAIT, a reset in CLOSE.
func wasReset(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	reset := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		reset = err == nil && info.State == unix.BPF_TCP_CLOSE
	})
	return reset
}

package tunnel

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketDrops is the count of datagrams the kernel dropped at uc's receive
// queue (it was full) since the socket was made: SO_MEMINFO's
// SK_MEMINFO_DROPS, the socket's sk_drops.
func socketDrops(uc *net.UDPConn) (uint64, bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var mem [unix.SK_MEMINFO_VARS]uint32
	var serr syscall.Errno
	cerr := rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mem))
		_, _, serr = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
	})
	if cerr != nil || serr != 0 {
		return 0, false
	}
	return uint64(mem[unix.SK_MEMINFO_DROPS]), true
}

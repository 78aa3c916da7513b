//go:build !linux

package tunnel

import "net"

// socketDrops: the kernel's drop count of a socket is known on Linux only.
func socketDrops(*net.UDPConn) (uint64, bool) { return 0, false }

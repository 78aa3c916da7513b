//go:build !linux

package tunnel

import "net"

// wasReset cannot tell a reset from a FIN after the fact on this system.
func wasReset(net.Conn) bool { return false }

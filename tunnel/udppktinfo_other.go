//go:build !linux

package tunnel

import (
	"net"
	"net/netip"
)

// pktinfoOOB is room for the control message of one datagram (none here:
// the destination of a port's flows is the address it is bound to).
const pktinfoOOB = 0

func enablePktinfo(uc *net.UDPConn) (v6, ok bool) { return false, false }

func parsePktinfo(oob []byte) netip.Addr { return netip.Addr{} }

func appendPktinfoSrc(dst []byte, src netip.Addr, v6 bool) []byte { return dst }

//go:build !unix

package tunnel

import (
	"net"
	"net/netip"
)

// readDatagramPooled reads one datagram from uc into a pooled buffer; the
// caller releases bp.
func readDatagramPooled(uc *net.UDPConn) (*[]byte, int, error) {
	bp := getBuf(MaxDatagram + 1)
	n, err := uc.Read(*bp)
	if err != nil {
		putBuf(bp)
		return nil, 0, err
	}
	return bp, n, nil
}

// writeDatagramNoWait sends p on uc, a connected UDP socket.
func writeDatagramNoWait(uc *net.UDPConn, p []byte) bool {
	_, err := uc.Write(p)
	return err == nil
}

// udpDest is a datagram's destination as sendToNoWait takes it.
type udpDest = netip.AddrPort

// sockaddrOf is a itself here.
func sockaddrOf(a netip.AddrPort, _ bool) udpDest { return a }

// sendToNoWait sends p to a from pc.
func sendToNoWait(pc *net.UDPConn, p, _ []byte, a udpDest) bool {
	_, err := pc.WriteToUDPAddrPort(p, a)
	return err == nil
}

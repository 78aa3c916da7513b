//go:build !unix

package tunnel

import "net"

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

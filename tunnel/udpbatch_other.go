//go:build !(linux && (amd64 || arm64))

package tunnel

import (
	"net"
	"net/netip"
)

// portReader reads an edge UDP port's datagrams, one per system call here.
type portReader struct {
	pc      *net.UDPConn
	pktinfo bool
	buf     []byte
	oob     []byte
	n, oobn int
	from    netip.AddrPort
}

func newPortReader(pc *net.UDPConn, pktinfo bool) *portReader {
	return &portReader{pc: pc, pktinfo: pktinfo, buf: make([]byte, MaxDatagram+1), oob: make([]byte, pktinfoOOB)}
}

// read waits for a datagram and takes it; it returns 1 (msg gives it).
func (r *portReader) read() (int, error) {
	var err error
	r.oobn = 0
	if r.pktinfo {
		r.n, r.oobn, _, r.from, err = r.pc.ReadMsgUDPAddrPort(r.buf, r.oob)
	} else {
		r.n, r.from, err = r.pc.ReadFromUDPAddrPort(r.buf)
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}

// msg is the datagram of the last read: its bytes (MaxDatagram+1 of them
// when it was larger than a UDP datagram may be), its source and its
// control messages.
func (r *portReader) msg(int) (b []byte, from netip.AddrPort, oob []byte) {
	return r.buf[:r.n], r.from, r.oob[:r.oobn]
}

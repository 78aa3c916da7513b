package tunnel

import "crypto/tls"

// Helpers of the tests that use production types.

// appendFrame appends one encoded frame to dst.
func appendFrame(dst []byte, id uint32, t frameType, payload []byte) []byte {
	var h [headerLen]byte
	putHeader(h[:], frameHeader{StreamID: id, Type: t, Length: uint32(len(payload))})
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// buffered is the number of peer bytes waiting to be written to conn.
func (st *stream) buffered() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, c := range st.recvQ {
		n += len(*c.bp) - c.off
	}
	return n
}

// edgeTLSConfig is the edge's TLS configuration without pin or CA.
func edgeTLSConfig(serverName string) *tls.Config {
	c, _ := edgeTLSConfigFor(serverName, "", "")
	return c
}

// sendFirstAssignLike ends a test hub's handshake as Hub.sendFirstAssign
// does for an edge without an assignment: an empty ASSIGN on the set's first
// connection.
func sendFirstAssignLike(hc handshakeConn, set setPlace) error {
	if set.Index != 0 {
		return nil
	}
	return newHandshakeIO(hc).send(frameAssign, encodeAssign(assignMsg{}, 1))
}

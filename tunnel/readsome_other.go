//go:build !unix

package tunnel

import "net"

// connReader reads from a connection into pooled buffers.
type connReader struct{ conn net.Conn }

func newConnReader(c net.Conn) *connReader { return &connReader{conn: c} }

func (r *connReader) read(limit int) (*[]byte, int, error) {
	bp := getBuf(limit)
	n, err := r.conn.Read(*bp)
	if n == 0 {
		putBuf(bp)
		bp = nil
	}
	return bp, n, err
}

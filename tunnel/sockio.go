package tunnel

import "net"

// readBlocking reads up to limit bytes from c into a pooled buffer, after
// headerLen bytes of room for the frame header, the way connReader.read
// does; it is its path for connections without a file descriptor.
func readBlocking(c net.Conn, limit int) (*[]byte, int, error) {
	bp := getBuf(headerLen + limit)
	n, err := c.Read((*bp)[headerLen:])
	if n == 0 {
		putBuf(bp)
		bp = nil
	}
	return bp, n, err
}

//go:build unix

package tunnel

import (
	"io"
	"net"
	"syscall"
)

// connReader reads from a connection into pooled buffers without holding a
// buffer while the connection is idle: it waits for readability first and
// takes a buffer only when the kernel has bytes for it. Thousands of idle
// connections therefore cost no read buffers.
type connReader struct {
	conn  net.Conn
	rc    syscall.RawConn
	limit int
	bp    *[]byte
	n     int
	err   error
	fn    func(fd uintptr) bool
}

func newConnReader(c net.Conn) *connReader {
	r := &connReader{conn: c, rc: rawConn(c)}
	if r.rc != nil {
		r.fn = r.readFD
	}
	return r
}

// rawConn is c's file descriptor, or nil when it has none: then reads
// block and tryWrite writes nothing.
func rawConn(c net.Conn) syscall.RawConn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// fd is the connection's file descriptor, or -1 when it has none.
func (r *connReader) fd() int {
	fd := -1
	if r.rc != nil {
		_ = r.rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

func (r *connReader) readFD(fd uintptr) bool {
	bp := getBuf(headerLen + r.limit)
	for {
		n, err := syscall.Read(int(fd), (*bp)[headerLen:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			putBuf(bp)
			return false
		}
		r.bp, r.n, r.err = bp, n, err
		return true
	}
}

// read returns up to limit bytes in a pooled buffer (nil when n is 0), after
// headerLen bytes of room for the frame header: the data is
// (*bp)[headerLen:headerLen+n]. The caller owns the buffer and returns it
// with putBuf.
func (r *connReader) read(limit int) (*[]byte, int, error) {
	if r.rc == nil {
		return readBlocking(r.conn, limit)
	}
	r.limit = limit
	r.bp, r.n, r.err = nil, 0, nil
	if err := r.rc.Read(r.fn); err != nil {
		return nil, 0, err
	}
	bp, n, err := r.bp, r.n, r.err
	r.bp = nil
	if err != nil {
		putBuf(bp)
		return nil, 0, err
	}
	if n <= 0 {
		putBuf(bp)
		return nil, 0, io.EOF
	}
	return bp, n, nil
}

// connWriter writes to a connection without ever waiting: tryWrite hands the
// kernel what fits in the socket buffer now and reports how much that was.
type connWriter struct {
	rc  syscall.RawConn
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

func newConnWriter(c net.Conn) *connWriter {
	w := &connWriter{rc: rawConn(c)}
	if w.rc != nil {
		w.fn = w.writeFD
	}
	return w
}

func (w *connWriter) writeFD(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.p)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			n, err = 0, nil
		}
		w.n, w.err = max(n, 0), err
		return true // never wait for writability
	}
}

// tryWrite writes as much of p as the socket takes without blocking.
func (w *connWriter) tryWrite(p []byte) (int, error) {
	if w.rc == nil {
		return 0, nil
	}
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.fn)
	w.p = nil
	if err != nil {
		return 0, err
	}
	return w.n, w.err
}

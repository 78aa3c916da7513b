//go:build !unix

package tunnel

import "net"

// connReader reads from a connection into pooled buffers.
type connReader struct{ conn net.Conn }

func newConnReader(c net.Conn) *connReader { return &connReader{conn: c} }

func (r *connReader) read(limit int) (*[]byte, int, error) { return readBlocking(r.conn, limit) }

// fd is -1: streams here never hibernate (hibernate_other.go).
func (r *connReader) fd() int { return -1 }

// connWriter would write without waiting; here it always defers to the
// blocking drain path.
type connWriter struct{}

func newConnWriter(net.Conn) *connWriter { return &connWriter{} }

func (w *connWriter) tryWrite([]byte) (int, error) { return 0, nil }

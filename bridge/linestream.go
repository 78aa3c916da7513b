package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/serve-zone/remoteingress/internal/ratelog"
)

// lineStream is the jsonrpc2.ObjectStream of both dialects: it reads request
// lines, handles bad ones itself (ReadObject fails only when the input ends),
// and writes each message as one line.
type lineStream struct {
	lines     *lineReader
	codec     codec
	log       *slog.Logger
	rejectLog *ratelog.Limiter // the "rejected input line" warnings
	max       int

	params  *paramStore // params of the requests read
	pending inflight    // requests read, not yet answered

	closed atomic.Bool // set by Close: nothing more is read or written

	mu   sync.Mutex // serializes writes to out
	out  io.Writer
	werr error // the first write error; later writes fail at once
}

var _ jsonrpc2.ObjectStream = (*lineStream)(nil)

// newLineStream returns a stream reading lines of at most max bytes from in and writing to out.
func newLineStream(in io.Reader, out io.Writer, c codec, max int, params *paramStore, log *slog.Logger) *lineStream {
	return &lineStream{
		lines: newLineReader(in, max), codec: c, log: log, rejectLog: ratelog.New(log, slog.LevelWarn, "%d more lines rejected"),
		max: max, params: params, out: out,
	}
}

// ReadObject implements jsonrpc2.ObjectStream. It returns the next valid
// request; bad lines are logged, answered where possible and skipped. It
// returns an error only when the input ends (io.EOF) or fails, after the
// requests already read are answered (at most answerGrace).
func (s *lineStream) ReadObject(v any) error {
	for {
		l, err := s.lines.next()
		if err != nil {
			s.rejectLog.Flush()
			s.pending.wait(answerGrace)
			return err
		}
		if s.closed.Load() {
			return io.EOF
		}
		// RFC 8259 allows ignoring a byte order mark; some writers put one
		// at the start of what they write.
		l.data = bytes.TrimPrefix(l.data, utf8BOM)
		if l.tooLong {
			s.rejected(tooLongRejection(l, s.max), l.size)
			continue
		}
		if isBlank(l.data) {
			continue
		}
		req, hasID, rej := s.codec.request(l.data, s.params)
		if rej != nil {
			s.rejected(rej, l.size)
			continue
		}
		if err := json.Unmarshal(req, v); err != nil {
			// parseRequest builds only requests the Conn can read; never kill the Conn.
			s.rejected(newRejection(leadingID(l.data), jsonrpc2.CodeInvalidRequest, "request not understood"), l.size)
			continue
		}
		if hasID {
			s.pending.add()
		}
		return nil
	}
}

// rejected logs a rejected line (never its content; at most logBurst a
// second, then a count) and writes its answer, if any.
func (s *lineStream) rejected(r *rejection, size int64) {
	attrs := []any{"reason", r.message, "bytes", size}
	if r.id != nil {
		attrs = append(attrs, "id", logID(r.id))
	}
	if r.method != "" {
		attrs = append(attrs, "method", truncate(r.method, 64))
	}
	s.rejectLog.Log("rejected input line", attrs...)
	if answer := s.codec.reject(r); answer != nil {
		_ = s.writeLine(answer)
	}
}

// WriteObject implements jsonrpc2.ObjectStream.
func (s *lineStream) WriteObject(obj any) error {
	msg, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var m wireMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return err
	}
	if m.Method == nil {
		defer s.pending.done() // an answer, written or not
	}
	out, err := s.codec.encode(msg, &m)
	if err != nil {
		return err
	}
	return s.writeLine(out)
}

// writeLine writes b and a newline in one write. After a failed write (the
// reader went away) every later write fails at once; the failure is logged once.
func (s *lineStream) writeLine(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return jsonrpc2.ErrClosed
	}
	if s.werr != nil {
		return s.werr
	}
	buf := make([]byte, 0, len(b)+1)
	buf = append(append(buf, b...), '\n')
	if _, err := s.out.Write(buf); err != nil {
		s.werr = fmt.Errorf("writing output: %w", err)
		s.log.Error("output is gone; further output is discarded", "error", err)
		return s.werr
	}
	return nil
}

// readErr is the error that ended reading, nil for the end of input.
func (s *lineStream) readErr() error {
	if err := s.lines.err; err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Close implements jsonrpc2.ObjectStream: nothing more is read or written.
// The underlying streams belong to the caller of Run and stay open; a read
// already under way finishes when its reader returns.
func (s *lineStream) Close() error {
	s.closed.Store(true)
	return nil
}

// utf8BOM is the UTF-8 byte order mark, ignored at the start of a line.
var utf8BOM = []byte("\ufeff")

// isBlank reports whether b holds only whitespace.
func isBlank(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n', '\f', '\v':
		default:
			return false
		}
	}
	return true
}

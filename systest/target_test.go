package systest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// Deterministic byte streams: both ends of a transfer generate the same
// ChaCha8 stream from a seed, so every byte can be checked as it arrives.

func genStream(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], 0x72656d6f7465696e) // "remotein"
	return rand.NewChaCha8(s)
}

// writeGen writes n bytes of the stream seed to w.
func writeGen(w io.Writer, seed uint64, n int64) (int64, error) {
	g := genStream(seed)
	buf := make([]byte, 32<<10)
	var sent int64
	for sent < n {
		chunk := buf[:min(int64(len(buf)), n-sent)]
		_, _ = g.Read(chunk)
		m, err := w.Write(chunk)
		sent += int64(m)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// verifier checks bytes against the stream of a seed, in order.
type verifier struct {
	g       *rand.ChaCha8
	scratch []byte
	N       int64 // bytes checked
	Bad     bool  // some byte differed
	BadAt   int64
}

func newVerifier(seed uint64) *verifier { return &verifier{g: genStream(seed)} }

func (v *verifier) check(p []byte) bool {
	if len(v.scratch) < len(p) {
		v.scratch = make([]byte, max(len(p), 32<<10))
	}
	want := v.scratch[:len(p)]
	_, _ = v.g.Read(want)
	if !v.Bad && !bytes.Equal(want, p) {
		v.Bad = true
		for i := range p {
			if p[i] != want[i] {
				v.BadAt = v.N + int64(i)
				break
			}
		}
	}
	v.N += int64(len(p))
	return !v.Bad
}

// ---------------------------------------------------------------------------
// PROXY v1 and a small TCP server for targets.

type proxyInfo struct {
	Line             string
	Proto            string
	SrcIP, DstIP     string
	SrcPort, DstPort int
}

// Src is the client address the header names, as host:port.
func (p proxyInfo) Src() string { return net.JoinHostPort(p.SrcIP, strconv.Itoa(p.SrcPort)) }

func readProxyHeader(br *bufio.Reader) (proxyInfo, error) {
	var line []byte
	for len(line) < 108 {
		b, err := br.ReadByte()
		if err != nil {
			return proxyInfo{}, fmt.Errorf("reading the PROXY header: %w (after %q)", err, line)
		}
		line = append(line, b)
		if bytes.HasSuffix(line, []byte("\r\n")) {
			break
		}
	}
	s := strings.TrimSuffix(string(line), "\r\n")
	f := strings.Split(s, " ")
	if len(f) != 6 || f[0] != "PROXY" || (f[1] != "TCP4" && f[1] != "TCP6") {
		return proxyInfo{}, fmt.Errorf("bad PROXY header %q", s)
	}
	sp, err1 := strconv.Atoi(f[4])
	dp, err2 := strconv.Atoi(f[5])
	if err1 != nil || err2 != nil {
		return proxyInfo{}, fmt.Errorf("bad ports in PROXY header %q", s)
	}
	return proxyInfo{Line: s, Proto: f[1], SrcIP: f[2], DstIP: f[3], SrcPort: sp, DstPort: dp}, nil
}

// tconn is an accepted target connection with its PROXY header read.
type tconn struct {
	*net.TCPConn
	br    *bufio.Reader
	proxy proxyInfo
}

// tcpServer accepts on a listener and runs handle for each connection; Close
// closes the listener and every connection and waits for the handlers.
type tcpServer struct {
	ln       net.Listener
	expectPP bool
	handle   func(*tconn)
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	ppErrs   []string
	accepted atomic.Int64
}

func serveTCP(t testing.TB, ln net.Listener, expectProxy bool, handle func(*tconn)) *tcpServer {
	s := &tcpServer{ln: ln, expectPP: expectProxy, handle: handle, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.Close)
	return s
}

func (s *tcpServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			tc := &tconn{TCPConn: c.(*net.TCPConn), br: bufio.NewReaderSize(c, 64<<10)}
			if s.expectPP {
				pi, err := readProxyHeader(tc.br)
				if err != nil {
					s.mu.Lock()
					s.ppErrs = append(s.ppErrs, err.Error())
					s.mu.Unlock()
					return
				}
				tc.proxy = pi
			}
			s.handle(tc)
		}()
	}
}

// open is the number of connections being handled.
func (s *tcpServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *tcpServer) proxyErrors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ppErrs...)
}

func (s *tcpServer) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// ---------------------------------------------------------------------------
// The op target: each connection carries one operation, announced after the
// PROXY header by a line "<kind> <id> <up> <down> <seed>\n":
//
//	X  the client sends up bytes of stream seed and half-closes; the target
//	   sends down bytes of stream seed+1 meanwhile, then "OK\n" if it got
//	   exactly the upload, intact, and a clean EOF ("BAD\n" otherwise), and
//	   closes. The client's acknowledgment is the "OK".
//	H  like X, but the target half-closes right after its down bytes, before
//	   the upload has ended (half-close the other way); its verdict on the
//	   upload is only in its record.
//	R  the client sends part of the upload and resets the connection; the
//	   target must see a reset, never a clean EOF.
//	T  the target sends down bytes and resets; the client must see a reset.
//	W  the target only reads until EOF or error (held connections).
//	D  the target sends down bytes until its writes stall for 300 ms (the
//	   client does not read), stops writing, and then only reads: so that a
//	   reset reaches its reader, not a concurrent writer.
//	U  the target reads nothing; when the test closes resetNow (the
//	   client's upload has stalled) it resets the connection.

const (
	opD = 'D'
	opU = 'U'

	opX = 'X'
	opH = 'H'
	opR = 'R'
	opT = 'T'
	opW = 'W'
)

// opRecord is what the target saw of one operation.
type opRecord struct {
	ID       uint64
	Kind     byte
	Up, Down int64
	Proxy    proxyInfo
	Start    time.Time
	End      time.Time
	Received int64
	Mismatch bool // a byte differed from the stream, or more than Up bytes came
	CleanEOF bool // the upload ended with a FIN
	Verified bool // CleanEOF after exactly Up intact bytes
	ReadErr  error
	Sent     int64
	WriteErr error
	stalled  chan struct{} // D: closed when the target stopped writing
	resetNow chan struct{} // U: closed by the test
	done     chan struct{}
}

type opTarget struct {
	srv *tcpServer
	mu  sync.Mutex
	// recs holds every operation seen, by id.
	recs    map[uint64]*opRecord
	headerl []string // connections whose op line was bad
	// truncLines are op lines cut short by a clean EOF.
	truncLines []truncatedLine
	empty      atomic.Int64
}

type truncatedLine struct {
	at   time.Time
	line string
}

func newOpTarget(t testing.TB, ln net.Listener) *opTarget {
	ot := &opTarget{recs: map[uint64]*opRecord{}}
	ot.srv = serveTCP(t, ln, true, ot.handle)
	return ot
}

func (ot *opTarget) record(id uint64) *opRecord {
	ot.mu.Lock()
	defer ot.mu.Unlock()
	return ot.recs[id]
}

// wait returns the record of id once the target is done with it.
func (ot *opTarget) wait(id uint64, timeout time.Duration) (*opRecord, error) {
	deadline := time.Now().Add(timeout)
	for {
		if r := ot.record(id); r != nil {
			select {
			case <-r.done:
				return r, nil
			case <-time.After(time.Until(deadline)):
				return r, fmt.Errorf("target still busy with op %d after %v", id, timeout)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("target never saw op %d", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ot *opTarget) all() []*opRecord {
	ot.mu.Lock()
	defer ot.mu.Unlock()
	out := make([]*opRecord, 0, len(ot.recs))
	for _, r := range ot.recs {
		out = append(out, r)
	}
	return out
}

func (ot *opTarget) handle(c *tconn) {
	line, err := c.br.ReadString('\n')
	if err != nil {
		if line == "" || !errors.Is(err, io.EOF) {
			// The stream was reset, or ended before its first byte (the
			// client went away, or the tunnel was refused or lost).
			ot.empty.Add(1)
			return
		}
		ot.mu.Lock()
		ot.truncLines = append(ot.truncLines, truncatedLine{at: time.Now(), line: line})
		ot.mu.Unlock()
		return
	}
	var kind string
	var id uint64
	var up, down int64
	var seed uint64
	if _, err := fmt.Sscanf(line, "%s %d %d %d %d\n", &kind, &id, &up, &down, &seed); err != nil || len(kind) != 1 {
		ot.mu.Lock()
		ot.headerl = append(ot.headerl, fmt.Sprintf("bad op line %q", line))
		ot.mu.Unlock()
		return
	}
	r := &opRecord{ID: id, Kind: kind[0], Up: up, Down: down, Proxy: c.proxy, Start: time.Now(),
		stalled: make(chan struct{}), resetNow: make(chan struct{}), done: make(chan struct{})}
	ot.mu.Lock()
	ot.recs[id] = r
	ot.mu.Unlock()
	defer func() {
		r.End = time.Now()
		close(r.done)
	}()
	var wg sync.WaitGroup
	send := func(halfClose bool) {
		defer wg.Done()
		r.Sent, r.WriteErr = writeGen(c, seed+1, down)
		if halfClose && r.WriteErr == nil {
			r.WriteErr = c.CloseWrite()
		}
	}
	switch r.Kind {
	case opX:
		wg.Add(1)
		go send(false)
		ot.readUpload(c, r, seed)
		if r.ReadErr != nil {
			_ = c.Close() // unblocks the sender
		}
		wg.Wait()
		r.resetSeenBySender()
		verdict := "BAD\n"
		if r.Verified && r.WriteErr == nil {
			verdict = "OK\n"
		}
		if _, err := io.WriteString(c, verdict); err == nil {
			_ = c.CloseWrite()
		}
	case opH:
		wg.Add(1)
		go send(true)
		ot.readUpload(c, r, seed)
		if r.ReadErr != nil {
			_ = c.Close()
		}
		wg.Wait()
		r.resetSeenBySender()
	case opR, opW:
		ot.readUpload(c, r, seed)
	case opD:
		g := genStream(seed + 1)
		buf := make([]byte, 32<<10)
		for r.Sent < down {
			_, _ = g.Read(buf)
			_ = c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := c.Write(buf[:min(int64(len(buf)), down-r.Sent)])
			r.Sent += int64(n)
			if err != nil {
				r.WriteErr = err // a timeout: the pipeline is full
				break
			}
		}
		close(r.stalled)
		ot.readUpload(c, r, seed)
	case opU:
		select {
		case <-r.resetNow:
		case <-time.After(30 * time.Second):
		}
		_ = c.SetLinger(0)
		_ = c.Close()
	case opT:
		wg.Add(1)
		send(false)
		_ = c.SetLinger(0)
		_ = c.Close()
	default:
		ot.mu.Lock()
		ot.headerl = append(ot.headerl, fmt.Sprintf("unknown op %q", kind))
		ot.mu.Unlock()
	}
}

// resetSeenBySender corrects CleanEOF: when a socket that is read and
// written at once gets a RST, Linux reports ECONNRESET to whichever call
// comes first and a plain EOF to the reader after it. So an upload that
// ended short with "EOF" while the sender failed with a reset was reset.
func (r *opRecord) resetSeenBySender() {
	if r.CleanEOF && !r.Verified && isReset(r.WriteErr) {
		r.CleanEOF = false
		r.ReadErr = fmt.Errorf("reset (reported to the sender: %v)", r.WriteErr)
	}
}

func (ot *opTarget) readUpload(c *tconn, r *opRecord, seed uint64) {
	v := newVerifier(seed)
	buf := make([]byte, 64<<10)
	for {
		n, err := c.br.Read(buf)
		if n > 0 {
			r.Received += int64(n)
			if !v.check(buf[:n]) || r.Received > r.Up {
				r.Mismatch = true
			}
		}
		if errors.Is(err, io.EOF) {
			r.CleanEOF = true
			r.Verified = !r.Mismatch && r.Received == r.Up
			return
		}
		if err != nil {
			r.ReadErr = err
			return
		}
	}
}

// ---------------------------------------------------------------------------
// The client side of an operation.

type opSpec struct {
	Kind     byte
	Up, Down int64
	Prefix   int64 // R: upload bytes sent before the reset
	SlowRead bool  // read the download in 16 KiB pieces, 10 ms apart
}

type opResult struct {
	ID         uint64
	Spec       opSpec
	Start, End time.Time
	Acked      bool  // the transfer was confirmed end to end (see opTarget)
	Err        error // why it was not (nil when Acked, or for R/T that behaved)
	Corrupt    bool  // a downloaded byte differed from the stream
	Truncated  bool  // the download ended with a clean EOF before its end (after some bytes)
	Refused    bool  // the connection ended before any byte came back
	GotReset   bool
	DownOK     int64 // downloaded bytes verified
	UpAcked    int64 // uploaded bytes the target confirmed
	LocalAddr  string
}

var opIDs atomic.Uint64

func init() { opIDs.Store(uint64(time.Now().UnixNano()) & 0xffffffff << 20) }

// runOp dials (with dial) and runs one operation against ot, within timeout.
func runOp(dial func() (net.Conn, error), ot *opTarget, spec opSpec, timeout time.Duration) (res opResult) {
	id := opIDs.Add(1)
	seed := rand.Uint64() >> 1
	res = opResult{ID: id, Spec: spec, Start: time.Now()}
	defer func() { res.End = time.Now() }()
	conn, err := dial()
	if err != nil {
		res.Err, res.Refused = fmt.Errorf("dial: %w", err), true
		return res
	}
	defer conn.Close()
	res.LocalAddr = conn.LocalAddr().String()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	tcp := conn.(*net.TCPConn)
	header := fmt.Sprintf("%c %d %d %d %d\n", spec.Kind, id, spec.Up, spec.Down, seed)
	if _, err := io.WriteString(conn, header); err != nil {
		res.Err, res.Refused = fmt.Errorf("writing the op line: %w", err), true
		return res
	}

	switch spec.Kind {
	case opR:
		if _, err := writeGen(conn, seed, spec.Prefix); err != nil {
			res.Err = fmt.Errorf("uploading the prefix: %w", err)
			return res
		}
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		_ = tcp.SetLinger(0)
		_ = tcp.Close()
		return res
	case opT:
		v := newVerifier(seed + 1)
		n, err := readVerify(conn, v, -1, false)
		res.DownOK = n
		res.Corrupt = v.Bad
		switch {
		case v.Bad:
			res.Err = fmt.Errorf("download corrupted at byte %d", v.BadAt)
		case err == nil:
			res.Err = fmt.Errorf("the target reset the connection but the client saw a clean EOF after %d of %d bytes", n, spec.Down)
			res.Truncated = n > 0
			res.Refused = n == 0
		case isReset(err):
			res.GotReset = true
		default:
			res.Err = fmt.Errorf("want a reset, got %w", err)
		}
		return res
	}

	// X and H: upload and download at once.
	upErr := make(chan error, 1)
	go func() {
		_, err := writeGen(conn, seed, spec.Up)
		if err == nil {
			err = tcp.CloseWrite()
		}
		upErr <- err
	}()
	v := newVerifier(seed + 1)
	n, err := readVerify(conn, v, spec.Down, spec.SlowRead)
	res.DownOK = n
	res.Corrupt = v.Bad
	fail := func(e error) opResult {
		if res.Err == nil {
			res.Err = e
		}
		_ = tcp.SetLinger(0)
		return res
	}
	if v.Bad {
		return fail(fmt.Errorf("download corrupted at byte %d", v.BadAt))
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			// A RST may have been reported to the uploader instead (see
			// resetSeenBySender): then this EOF is a reset.
			select {
			case e := <-upErr:
				if isReset(e) {
					res.GotReset = true
					return fail(fmt.Errorf("reset after %d of %d download bytes (reported to the uploader: %v)", n, spec.Down, e))
				}
			case <-time.After(2 * time.Second):
			}
			if n == 0 {
				res.Refused = true
				return fail(fmt.Errorf("the connection ended before any byte came back"))
			}
			res.Truncated = true
			return fail(fmt.Errorf("clean EOF after %d of %d download bytes", n, spec.Down))
		}
		res.GotReset = isReset(err)
		return fail(fmt.Errorf("download after %d of %d bytes: %w", n, spec.Down, err))
	}
	// The download is complete; what follows is the verdict (X) or EOF (H).
	rest, err := io.ReadAll(io.LimitReader(conn, 64))
	if e := <-upErr; e != nil {
		res.GotReset = isReset(e)
		return fail(fmt.Errorf("upload: %w", e))
	}
	if err != nil {
		res.GotReset = isReset(err)
		return fail(fmt.Errorf("reading the end of the stream: %w", err))
	}
	switch spec.Kind {
	case opX:
		if string(rest) != "OK\n" {
			if len(rest) == 0 && spec.Down == 0 {
				res.Refused = true
			}
			return fail(fmt.Errorf("target verdict %q, want \"OK\\n\"", rest))
		}
	case opH:
		if len(rest) != 0 {
			return fail(fmt.Errorf("%d bytes after the download: %q", len(rest), rest))
		}
		r, err := ot.wait(id, 10*time.Second)
		if err != nil {
			return fail(err)
		}
		if !r.Verified {
			return fail(fmt.Errorf("the target did not get the upload intact: %d of %d bytes, mismatch %v, clean EOF %v, err %v",
				r.Received, r.Up, r.Mismatch, r.CleanEOF, r.ReadErr))
		}
	}
	res.Acked = true
	res.UpAcked = spec.Up
	return res
}

// readVerify reads until want bytes (want < 0: until EOF) and checks them.
// It returns io.EOF when the stream ended before want bytes, nil when want
// bytes came (or EOF with want < 0), or the read error.
func readVerify(conn net.Conn, v *verifier, want int64, slow bool) (int64, error) {
	size := 64 << 10
	if slow {
		size = 16 << 10
	}
	buf := make([]byte, size)
	var n int64
	for want < 0 || n < want {
		chunk := buf
		if want >= 0 {
			chunk = buf[:min(int64(len(buf)), want-n)]
		}
		m, err := conn.Read(chunk)
		if m > 0 {
			n += int64(m)
			if !v.check(chunk[:m]) {
				return n, nil
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && want < 0 {
				return n, nil
			}
			return n, err
		}
		if slow {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return n, nil
}

func isReset(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}

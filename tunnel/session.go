package tunnel

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// Protocol limits (the defaults of Tuning are in config.go).
const (
	minWindow      = 64 << 10
	maxWindow      = 16 << 20
	maxDataFrame   = hugeBuf - HeaderLen  // largest DATA payload we send: frame and header fill one pooled buffer
	minReadChunk   = smallBuf - HeaderLen // first read of a stream, and of one that sends small messages
	writeBufSize   = 64 << 10
	maxResetReason = 256
	maxGoAway      = 1024
)

// ProtocolError is a violation of the wire protocol by the peer; it closes
// the tunnel it happened on and nothing else.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "protocol error: " + e.Msg }

func protoErr(format string, a ...any) error { return &ProtocolError{Msg: fmt.Sprintf(format, a...)} }

var (
	errSessionClosed  = errors.New("tunnel closed")
	errTooManyStreams = errors.New("too many concurrent streams")
)

// LocalCloseError is a close we decided on; its reason is sent to the peer.
type LocalCloseError struct{ Reason string }

func (e *LocalCloseError) Error() string { return e.Reason }

// sessionHooks lets the hub and the edge react to stream life.
type sessionHooks struct {
	// open is called by the hub's reader for each valid OPEN; it must not block.
	open func(st *stream, hdr proxyproto.Header)
	// closed is called once per stream when it is gone.
	closed func(st *stream)
}

type resetReq struct {
	id     uint32
	reason string
}

// session is one authenticated tunnel: a reader goroutine that dispatches
// frames, the write side of writer.go (stream goroutines write their own
// frames under one lock; a control goroutine writes what the reader and the
// timers queue), and the streams multiplexed over it.
type session struct {
	conn       net.Conn
	isHub      bool
	log        *slog.Logger
	tuning     Tuning
	peerWindow uint32       // initial send credit of each stream
	autotune   bool         // the peer grows windows on BLOCKED: send them
	grown      atomic.Int64 // growth beyond tuning.Window of the live streams' windows
	hooks      sessionHooks

	fr *FrameReader
	bw *bufio.Writer
	fw *FrameWriter

	// The write side (writer.go). wlock is held while writing to bw.
	wlock   sync.Mutex
	waiting atomic.Int32 // writers waiting for wlock
	werr    error        // the first write error; guarded by wlock
	wscratch
	// Control frames queued by the reader and the timers, guarded by cmu.
	cmu         sync.Mutex
	ctrlPending atomic.Bool
	wake        chan struct{}
	wuQ         []*stream // streams with a pending window update
	resets      []resetReq
	blocked     []uint32 // streams to send BLOCKED for
	pingPending bool
	pingData    [8]byte
	pongPending bool
	pongData    [8]byte
	goAway      string

	mu      sync.Mutex
	streams map[uint32]*stream
	lastID  uint32 // hub: highest OPEN seen; edge: highest id allocated
	nextID  uint32 // edge: the id of the next stream; 0 when ids ran out
	idStep  uint32 // edge: ids go nextID, nextID+idStep, …, unique across a TunnelSet

	recvFrames atomic.Uint64
	ctx        context.Context
	cancel     context.CancelFunc
	closeOnce  sync.Once
	closeErr   error
	writerDone chan struct{}
	wg         sync.WaitGroup // stream goroutines
}

func newSession(conn net.Conn, isHub bool, tuning Tuning, peer peerParams, log *slog.Logger, hooks sessionHooks) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		conn: conn, isHub: isHub, log: log, tuning: tuning, peerWindow: peer.window, hooks: hooks,
		autotune: peer.caps&capWindowAutotune != 0,
		wake:     make(chan struct{}, 1), streams: make(map[uint32]*stream), nextID: 1, idStep: 1,
		ctx: ctx, cancel: cancel, writerDone: make(chan struct{}),
	}
	s.fr = NewFrameReader(conn)
	s.fr.Limit = max(tuning.MaxWindow, maxGoAway) // DATA is checked against its stream's window before it is read
	s.bw = bufio.NewWriterSize(conn, writeBufSize)
	s.fw = NewFrameWriter(s.bw)
	return s
}

// dataType and closeType are what this side sends for stream bytes and FIN.
func (s *session) dataType() FrameType {
	if s.isHub {
		return FrameDataBack
	}
	return FrameData
}

func (s *session) closeType() FrameType {
	if s.isHub {
		return FrameCloseBack
	}
	return FrameClose
}

// run serves the session until it ends and returns why. Every goroutine it
// started has finished when it returns.
func (s *session) run() error {
	go s.controlWriter()
	kaDone := make(chan struct{})
	go s.keepalive(kaDone)
	err := s.safeReadLoop()
	s.close(err)
	<-s.writerDone
	<-kaDone
	s.abortAll()
	s.wg.Wait()
	return s.closeErr
}

// close ends the session once; the first reason wins. A local reason is
// sent to the peer in a GOAWAY.
func (s *session) close(reason error) {
	s.closeOnce.Do(func() {
		if reason == nil {
			reason = errSessionClosed
		}
		s.closeErr = reason
		var le *LocalCloseError
		var pe *ProtocolError
		s.cmu.Lock()
		switch {
		case errors.As(reason, &le):
			s.goAway = le.Reason
		case errors.As(reason, &pe):
			s.goAway = pe.Error()
		}
		s.cmu.Unlock()
		// Bound the final flush: a peer that stopped reading cannot hold us.
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.cancel()
		s.signal()
	})
}

func (s *session) done() <-chan struct{} { return s.ctx.Done() }

func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// goSafe runs fn on a goroutine counted in wg; a panic closes the session
// instead of the process.
func (s *session) goSafe(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.recoverPanic()
		fn()
	}()
}

func (s *session) recoverPanic() {
	if r := recover(); r != nil {
		s.log.Error("internal error, closing tunnel", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		s.close(&LocalCloseError{Reason: "internal error"})
	}
}

func (s *session) safeReadLoop() (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("internal error in tunnel reader", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = &LocalCloseError{Reason: "internal error"}
		}
	}()
	return s.readLoop()
}

func (s *session) readLoop() error {
	for {
		h, err := s.fr.ReadHeader()
		if err != nil {
			if errors.Is(err, ErrUnknownFrame) || errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrTruncatedHeader) {
				return protoErr("%v", err)
			}
			return s.readError(err)
		}
		s.recvFrames.Add(1)
		if err := s.dispatch(h); err != nil {
			return err
		}
	}
}

// readError turns a read failure into the reason the tunnel ended.
func (s *session) readError(err error) error {
	select {
	case <-s.done():
		return s.closeErr
	default:
	}
	return fmt.Errorf("connection lost: %w", err)
}

func (s *session) dispatch(h FrameHeader) error {
	switch h.Type {
	case FramePing, FramePong, FrameGoAway:
		if h.StreamID != 0 {
			return protoErr("%s on stream %d", h.Type, h.StreamID)
		}
	default:
		if h.StreamID == 0 {
			return protoErr("%s on stream 0", h.Type)
		}
	}
	switch h.Type {
	case FramePing, FramePong:
		if h.Length != 8 {
			return protoErr("%s with %d bytes", h.Type, h.Length)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		if h.Type == FramePing {
			s.cmu.Lock()
			copy(s.pongData[:], p)
			s.pongPending = true
			s.cmu.Unlock()
			s.ctrlPending.Store(true)
			s.signal()
		}
		return nil
	case FrameGoAway:
		if h.Length > maxGoAway {
			return protoErr("GOAWAY of %d bytes", h.Length)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		return &RemoteCloseError{Reason: sanitizeReason(p)}
	case FrameWindowUpdate:
		if h.Length != 4 {
			return protoErr("WINDOW_UPDATE with %d bytes", h.Length)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		inc := binary.BigEndian.Uint32(p)
		st, err := s.lookup(h)
		if st == nil || err != nil {
			return err
		}
		return st.addCredit(inc)
	case FrameBlocked:
		if h.Length != 0 {
			return protoErr("BLOCKED with a payload")
		}
		st, err := s.lookup(h)
		if st == nil || err != nil {
			return err
		}
		st.peerBlocked()
		return nil
	case FrameReset:
		if h.Length > maxResetReason {
			return protoErr("RESET of %d bytes", h.Length)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		st, err := s.lookup(h)
		if st == nil || err != nil {
			return err
		}
		st.abort("reset by peer: "+sanitizeReason(p), false)
		return nil
	}
	if s.isHub {
		switch h.Type {
		case FrameOpen:
			return s.handleOpen(h)
		case FrameData:
			return s.handleData(h)
		case FrameClose:
			return s.handleClose(h)
		}
	} else {
		switch h.Type {
		case FrameDataBack:
			return s.handleData(h)
		case FrameCloseBack:
			return s.handleClose(h)
		}
	}
	return protoErr("unexpected %s frame", h.Type)
}

// lookup finds the stream of a frame. Frames for a stream that existed and is
// gone are normal (they crossed its end on the wire) and yield nil, nil; a
// stream id that was never opened is a protocol error.
func (s *session) lookup(h FrameHeader) (*stream, error) {
	s.mu.Lock()
	st := s.streams[h.StreamID]
	last := s.lastID
	s.mu.Unlock()
	if st == nil && h.StreamID > last {
		return nil, protoErr("%s for stream %d, which was never opened", h.Type, h.StreamID)
	}
	return st, nil
}

func (s *session) handleOpen(h FrameHeader) error {
	if h.Length > proxyproto.MaxV1Len {
		return protoErr("OPEN payload of %d bytes", h.Length)
	}
	p, err := s.fr.ReadPayload(h)
	if err != nil {
		return s.readError(err)
	}
	hdr, err := proxyproto.ParseV1(p)
	if err != nil {
		return protoErr("OPEN for stream %d: %v", h.StreamID, err)
	}
	s.mu.Lock()
	if h.StreamID <= s.lastID {
		s.mu.Unlock()
		return protoErr("OPEN for stream %d, not above the last opened %d", h.StreamID, s.lastID)
	}
	if len(s.streams) >= s.tuning.MaxStreams {
		s.mu.Unlock()
		return protoErr("OPEN beyond the limit of %d concurrent streams", s.tuning.MaxStreams)
	}
	s.lastID = h.StreamID
	st := newStream(s, h.StreamID, nil)
	s.streams[h.StreamID] = st
	s.mu.Unlock()
	s.hooks.open(st, hdr)
	return nil
}

func (s *session) handleData(h FrameHeader) error {
	st, err := s.lookup(h)
	if err != nil {
		return err
	}
	if st == nil || h.Length == 0 {
		if _, err := s.fr.ReadPayload(h); err != nil { // discard
			return s.readError(err)
		}
		return nil
	}
	if err := st.reserve(h.Length); err != nil {
		return err
	}
	bp := getBuf(int(h.Length))
	if err := s.fr.ReadPayloadInto(*bp); err != nil {
		putBuf(bp)
		return s.readError(err)
	}
	return st.pushData(bp)
}

func (s *session) handleClose(h FrameHeader) error {
	if h.Length != 0 {
		return protoErr("%s with a payload", h.Type)
	}
	st, err := s.lookup(h)
	if st == nil || err != nil {
		return err
	}
	return st.remoteFinish()
}

func (s *session) removeStream(st *stream) {
	s.mu.Lock()
	delete(s.streams, st.id)
	s.mu.Unlock()
}

func (s *session) activeStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

func (s *session) abortAll() {
	s.mu.Lock()
	all := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		all = append(all, st)
	}
	s.mu.Unlock()
	for _, st := range all {
		st.abort("tunnel closed", false)
	}
}

// keepalive pings every interval and closes a session from which nothing has
// arrived for the timeout. It looks ten times per timeout, so a dead tunnel
// is noticed at most a tenth of the timeout late; half a tick of slack
// absorbs the ticker's jitter.
func (s *session) keepalive(done chan struct{}) {
	defer close(done)
	tick := min(s.tuning.KeepaliveInterval/2, s.tuning.KeepaliveTimeout/10)
	slack := tick / 2
	t := time.NewTicker(tick)
	defer t.Stop()
	lastCount, lastSeen, lastPing := s.recvFrames.Load(), time.Now(), time.Now()
	var seq uint64
	for {
		select {
		case <-s.done():
			return
		case now := <-t.C:
			if c := s.recvFrames.Load(); c != lastCount {
				lastCount, lastSeen = c, now
			} else if now.Sub(lastSeen)+slack >= s.tuning.KeepaliveTimeout {
				s.close(fmt.Errorf("keepalive timeout: nothing received for %s", now.Sub(lastSeen).Round(time.Second)))
				return
			}
			if now.Sub(lastPing)+slack < s.tuning.KeepaliveInterval {
				continue
			}
			lastPing = now
			seq++
			s.cmu.Lock()
			binary.BigEndian.PutUint64(s.pingData[:], seq)
			s.pingPending = true
			s.cmu.Unlock()
			s.ctrlPending.Store(true)
			s.signal()
		}
	}
}

// startStream starts a new edge-side stream for conn: its goroutine sends
// OPEN with the given PROXY header (the id is allocated then, under the
// write lock, so OPENs reach the hub in id order) and then its bytes.
func (s *session) startStream(conn net.Conn, header []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done():
		return errSessionClosed
	default:
	}
	if len(s.streams) >= s.tuning.MaxStreams {
		return errTooManyStreams
	}
	st := newStream(s, 0, conn)
	// Counted before the session can see it is done: run() waits for it.
	s.goSafe(func() {
		if err := s.writeOpen(st, header); err != nil {
			st.abort("tunnel closed", false)
			return
		}
		st.upstream()
	})
	return nil
}

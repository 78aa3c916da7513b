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
	maxDataFrame   = hugeBuf - headerLen  // largest DATA payload we send: frame and header fill one pooled buffer
	minReadChunk   = smallBuf - headerLen // first read of a stream, and of one that sends small messages
	writeBufSize   = 64 << 10
	maxResetReason = 256
	maxGoAway      = 1024
)

// protocolError is a violation of the wire protocol by the peer; it closes
// the tunnel it happened on and nothing else.
type protocolError struct{ Msg string }

func (e *protocolError) Error() string { return "protocol error: " + e.Msg }

func protoErr(format string, a ...any) error { return &protocolError{Msg: fmt.Sprintf(format, a...)} }

var (
	errSessionClosed  = errors.New("tunnel closed")
	errTooManyStreams = errors.New("too many concurrent streams")
	errIDsExhausted   = &localCloseError{Reason: "stream ids exhausted, reconnecting"}
)

// localCloseError is a close we decided on; its reason is sent to the peer.
type localCloseError struct{ Reason string }

func (e *localCloseError) Error() string { return e.Reason }

// sessionHooks lets the hub react to stream life (see Serve).
type sessionHooks struct {
	// open is called by the hub's reader for each valid OPEN; it must not block.
	open func(st *stream, hdr proxyproto.Header)
	// closed is called once per stream when it is gone.
	closed func(st *stream)
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
	peerCaps   uint32       // the capability bits the peer announced
	grown      atomic.Int64 // growth beyond tuning.Window of the live streams' windows
	hooks      sessionHooks
	message    func(t frameType, p []byte) error // handles ASSIGN and BOUND (Serve); nil: refused

	syncMu  sync.Mutex
	syncSeq uint64
	syncs   map[uint64]chan struct{} // Sync's channels by PING payload

	fr *frameReader
	bw *bufio.Writer
	fw *frameWriter

	// The write side (writer.go). wlock is held while writing to bw.
	wlock   sync.Mutex
	waiting atomic.Int32 // writers waiting for wlock
	werr    error        // the first write error; guarded by wlock
	batch   controlBatch // guarded by wlock
	ctrl    controlQueue // control frames queued by the reader and the timers

	slots     *streamSlots // the stream limit, checked once when a stream starts
	mu        sync.Mutex
	streams   map[uint32]*stream
	maxOpenID uint32 // the highest stream id opened: in an OPEN received (hub) or sent (edge)
	ids       idSeq  // edge: the ids of new streams

	recvFrames atomic.Uint64
	ctx        context.Context
	cancel     context.CancelFunc
	closeOnce  sync.Once
	closeErr   error
	writerDone chan struct{}
	wg         sync.WaitGroup // stream goroutines

	pollerOnce sync.Once
	poller     *idlePoller // the sockets of hibernating streams; see idle

	stats *streamCounters // streams and bytes, for metrics (see countInto)

	// UDP flows (flow.go).
	flows     *flowHandler  // the peer's flow frames; nil: refused
	udp       udpQueue      // flow frames waiting for the write lock
	udpBatch  []udpEntry    // guarded by wlock
	flowIDs   flowIDs       // edge: the ids of new flows
	maxFlowID atomic.Uint32 // the highest flow id opened: received (hub) or sent (edge)
}

func newSession(conn net.Conn, isHub bool, tuning Tuning, peer peerParams, log *slog.Logger, hooks sessionHooks) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		conn: conn, isHub: isHub, log: log, tuning: tuning, peerWindow: peer.window, hooks: hooks,
		autotune: peer.caps&capWindowAutotune != 0, peerCaps: peer.caps,
		ctrl: newControlQueue(), streams: make(map[uint32]*stream), ids: idSeq{next: 1, step: 1},
		slots: newStreamSlots(tuning.MaxStreams),
		ctx:   ctx, cancel: cancel, writerDone: make(chan struct{}),
	}
	s.stats = new(streamCounters)
	s.fr = newFrameReader(conn)
	s.fr.Limit = max(tuning.MaxWindow, maxGoAway, maxAssignLen) // every type checks its own length; DATA against its stream's window, before it is read
	s.bw = bufio.NewWriterSize(conn, writeBufSize)
	s.fw = newFrameWriter(s.bw)
	return s
}

// streamFrames returns the frame types that a hub (hub true) or an edge
// sends for stream bytes and for its FIN.
func streamFrames(hub bool) (data, fin frameType) {
	if hub {
		return frameDataBack, frameCloseBack
	}
	return frameData, frameClose
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
	s.pollerOnce.Do(func() {}) // no poller from now on
	if s.poller != nil {
		s.poller.close()
	}
	s.wg.Wait()
	s.udp.drain()
	return s.closeErr
}

// idle returns the session's idle poller, made at first use; nil where
// streams cannot hibernate, and once the session has ended.
func (s *session) idle() *idlePoller {
	s.pollerOnce.Do(func() { s.poller = newIdlePoller(s) })
	return s.poller
}

// sweepIdle asks the streams whose upstream has waited in one read since
// the last sweep to hibernate: a read deadline in the past wakes the read,
// and upstream hands the socket to the idle poller (stream.hibernate).
func (s *session) sweepIdle() {
	var sleepers []*stream
	s.mu.Lock()
	for _, st := range s.streams {
		seq := st.readSeq.Load()
		if seq == st.sweptSeq && st.inRead.Load() && !st.sleepy.Load() {
			st.sleepy.Store(true)
			sleepers = append(sleepers, st)
		}
		st.sweptSeq = seq
	}
	s.mu.Unlock()
	past := time.Unix(1, 0)
	for _, st := range sleepers {
		_ = st.conn.SetReadDeadline(past)
	}
	if len(sleepers) >= releaseAfterSleepers {
		scheduleMemoryRelease()
	}
}

// After a wave of streams hibernated, the stacks their goroutines grew (4 to
// 8 KiB each, on TLS writes and dials) are free but still held by the
// process. Go's scavenger hands such memory back slowly and keeps a heap's
// worth; a process holding thousands of idle connections would keep the
// peak of their arrival for good. So after a sweep that put at least
// releaseAfterSleepers streams to sleep, the memory is handed back to the
// kernel, a moment later (when they have hibernated) and at most once per
// releaseEvery (a wave within that time waits for its end): a garbage
// collection of a heap that holds idle streams takes milliseconds.
const (
	releaseAfterSleepers = 256
	releaseDelay         = time.Second
	releaseEvery         = 5 * time.Second
)

var memoryRelease struct {
	mu      sync.Mutex
	pending bool
	last    time.Time
}

// scheduleMemoryRelease returns free memory to the kernel soon, unless a
// release is already due.
func scheduleMemoryRelease() {
	r := &memoryRelease
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending {
		return
	}
	r.pending = true
	delay := max(releaseDelay, time.Until(r.last.Add(releaseEvery)))
	time.AfterFunc(delay, func() {
		debug.FreeOSMemory()
		r.mu.Lock()
		r.pending, r.last = false, time.Now()
		r.mu.Unlock()
	})
}

// close ends the session once; the first reason wins. A local reason is
// sent to the peer in a GOAWAY.
func (s *session) close(reason error) {
	s.closeOnce.Do(func() {
		if reason == nil {
			reason = errSessionClosed
		}
		s.closeErr = reason
		var le *localCloseError
		var pe *protocolError
		var ie *panicError
		switch {
		case errors.As(reason, &le):
			s.ctrl.setGoAway(le.Reason)
		case errors.As(reason, &pe):
			s.ctrl.setGoAway(pe.Error())
		case errors.As(reason, &ie):
			s.ctrl.setGoAway("internal error")
		}
		// Bound the final flush: a peer that stopped reading cannot hold us.
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		s.cancel()
		s.ctrl.signal()
	})
}

func (s *session) done() <-chan struct{} { return s.ctx.Done() }

// goSafe runs fn on a goroutine counted in wg; a panic closes the session
// instead of the process.
func (s *session) goSafe(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var perr error
		defer s.closeOnPanic(&perr)
		defer recoverInto(s.log, "a tunnel stream", &perr)
		fn()
	}()
}

// closeOnPanic, deferred before recoverInto, closes the session when that
// caught a panic.
func (s *session) closeOnPanic(perr *error) {
	if *perr != nil {
		s.close(*perr)
	}
}

func (s *session) safeReadLoop() (err error) {
	defer recoverInto(s.log, "the tunnel reader", &err)
	return s.readLoop()
}

func (s *session) readLoop() error {
	for {
		h, err := s.fr.ReadHeader()
		if err != nil {
			if errors.Is(err, errUnknownFrame) || errors.Is(err, errFrameTooLarge) || errors.Is(err, errTruncatedHeader) {
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

// dispatch handles one frame whose header has been read; it reads (or
// skips) the payload.
func (s *session) dispatch(h frameHeader) error {
	if h.Type >= frameUDPOpen && h.Type <= frameUDPClose {
		return s.dispatchFlow(h)
	}
	if h.StreamID == 0 {
		return s.dispatchControl(h)
	}
	return s.dispatchStream(h)
}

// dispatchControl handles a frame on stream 0: PING, PONG, GOAWAY.
func (s *session) dispatchControl(h frameHeader) error {
	switch h.Type {
	case framePing, framePong:
		if h.Length != 8 {
			return protoErr("%s with %d bytes", h.Type, h.Length)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		if h.Type == framePing {
			s.ctrl.pongFor(p)
		} else if seq := binary.BigEndian.Uint64(p); seq&syncBit != 0 {
			s.synced(seq)
		}
		return nil
	case frameGoAway:
		if h.Length > maxGoAway {
			return protoErr("GOAWAY of %d bytes", h.Length)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		return &remoteCloseError{Reason: sanitizeReason(p)}
	case frameAssign, frameBound, frameDrain:
		return s.readMessage(h)
	}
	return protoErr("%s on stream 0", h.Type)
}

// syncBit marks the PINGs of Sync; keepalive PINGs count from 1 without it.
const syncBit = 1 << 63

// Sync returns a channel that is closed once the peer has answered a PING
// queued now: every frame the peer sent before it read that PING has then
// been read. It is never closed if the connection ends first.
func (s *session) Sync() <-chan struct{} {
	ch := make(chan struct{})
	s.syncMu.Lock()
	s.syncSeq++
	seq := syncBit | s.syncSeq
	if s.syncs == nil {
		s.syncs = make(map[uint64]chan struct{})
	}
	s.syncs[seq] = ch
	s.syncMu.Unlock()
	s.ctrl.syncPing(seq)
	return ch
}

// synced closes the channel of the sync whose PONG carries seq; a PONG
// that answers no sync of ours is ignored.
func (s *session) synced(seq uint64) {
	s.syncMu.Lock()
	ch := s.syncs[seq]
	delete(s.syncs, seq)
	s.syncMu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// readMessage reads an ASSIGN, a BOUND or a DRAIN and hands it to
// s.message. Each goes one way only (ASSIGN and DRAIN to the edge, BOUND
// to the hub), between peers that announced the capability; an error of the
// handler is a protocol error.
func (s *session) readMessage(h frameHeader) error {
	limit, toHub, needs := uint32(maxAssignLen), false, capAssign
	switch h.Type {
	case frameBound:
		limit, toHub = maxBoundLen, true
	case frameDrain:
		limit, needs = maxGoAway, capDrain
	}
	if s.isHub != toHub || s.message == nil || s.peerCaps&needs == 0 {
		return protoErr("unexpected %s", h.Type)
	}
	if h.Length > limit {
		return protoErr("%s of %d bytes", h.Type, h.Length)
	}
	p := make([]byte, h.Length) // rare and possibly large: not kept in the reader's buffer
	if err := s.fr.ReadPayloadInto(p); err != nil {
		return s.readError(err)
	}
	if err := s.message(h.Type, p); err != nil {
		return protoErr("%v", err)
	}
	return nil
}

// dispatchStream handles a frame on a stream: the frames of both sides,
// then those that only the peer's role sends.
func (s *session) dispatchStream(h frameHeader) error {
	switch h.Type {
	case framePing, framePong, frameGoAway:
		return protoErr("%s on stream %d", h.Type, h.StreamID)
	case frameWindowUpdate:
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
	case frameBlocked:
		if h.Length != 0 {
			return protoErr("BLOCKED with a payload")
		}
		st, err := s.lookup(h)
		if st == nil || err != nil {
			return err
		}
		st.peerBlocked()
		return nil
	case frameReset:
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
	data, fin := streamFrames(!s.isHub) // what the peer sends
	switch {
	case s.isHub && h.Type == frameOpen:
		return s.handleOpen(h)
	case h.Type == data:
		return s.handleData(h)
	case h.Type == fin:
		return s.handleClose(h)
	}
	return protoErr("unexpected %s frame", h.Type)
}

// lookup finds the stream of a frame. Frames for a stream that existed and is
// gone are normal (they crossed its end on the wire) and yield nil, nil; a
// stream id that was never opened is a protocol error.
func (s *session) lookup(h frameHeader) (*stream, error) {
	s.mu.Lock()
	st := s.streams[h.StreamID]
	last := s.maxOpenID
	s.mu.Unlock()
	if st == nil && h.StreamID > last {
		return nil, protoErr("%s for stream %d, which was never opened", h.Type, h.StreamID)
	}
	return st, nil
}

func (s *session) handleOpen(h frameHeader) error {
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
	if h.StreamID <= s.maxOpenID {
		s.mu.Unlock()
		return protoErr("OPEN for stream %d, not above the last opened %d", h.StreamID, s.maxOpenID)
	}
	if !s.slots.take() {
		s.mu.Unlock()
		return protoErr("OPEN beyond the limit of %d concurrent streams", s.tuning.MaxStreams)
	}
	s.maxOpenID = h.StreamID
	s.stats.opened.Add(1)
	st := newStream(s, h.StreamID, nil)
	st.hdr = hdr
	s.streams[h.StreamID] = st
	s.mu.Unlock()
	s.hooks.open(st, hdr)
	return nil
}

func (s *session) handleData(h frameHeader) error {
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
	s.stats.recv.Add(uint64(h.Length))
	return st.pushData(bp)
}

func (s *session) handleClose(h frameHeader) error {
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
	idle := time.NewTicker(s.tuning.idleAfter)
	defer idle.Stop()
	lastCount, lastSeen, lastPing := s.recvFrames.Load(), time.Now(), time.Now()
	var seq uint64
	for {
		select {
		case <-s.done():
			return
		case <-idle.C:
			s.sweepIdle()
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
			s.ctrl.pingNow(seq)
		}
	}
}

// startStream starts a new edge-side stream for conn: its goroutine sends
// OPEN with the given PROXY header (the id is allocated then, under the
// write lock, so OPENs reach the hub in id order) and then its bytes.
func (s *session) startStream(conn net.Conn, header []byte, onDone func()) (*stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done():
		return nil, errSessionClosed
	default:
	}
	if !s.slots.take() {
		return nil, errTooManyStreams
	}
	s.stats.opened.Add(1)
	st := newStream(s, 0, conn)
	st.onDone = onDone
	// Counted before the session can see it is done: run() waits for it.
	s.goSafe(func() {
		if err := s.writeOpen(st, header); err != nil {
			st.abort("tunnel closed", false)
			return
		}
		if st.openSent() {
			st.upstream()
		}
	})
	return st, nil
}

// allocID registers st under the next stream id of this edge session. The
// caller holds the write lock, so OPENs go out in id order. It fails when
// the session is closing (checked under mu: abortAll, which runs after the
// close, must find every registered stream) and when the ids have run out.
func (s *session) allocID(st *stream) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return errSessionClosed
	}
	id, ok := s.ids.take()
	if !ok {
		return errIDsExhausted
	}
	st.id = id
	s.maxOpenID = id
	s.streams[id] = st
	return nil
}

// setIDs makes this edge session connection set.Index of set: its stream
// ids are set.Index+1, +set.Size, +2·set.Size, …, unique across the set.
func (s *session) setIDs(set setPlace) {
	s.ids = idSeq{next: uint32(set.Index) + 1, step: uint32(set.Size)}
}

// shareSlots makes this session count its streams in slots, shared by the
// connections of an edge's set: the edge's limit is over all of them.
func (s *session) shareSlots(slots *streamSlots) { s.slots = slots }

// idSeq hands out the stream ids next, next+step, next+2·step, … until they
// would wrap around.
type idSeq struct{ next, step uint32 }

func (q *idSeq) take() (uint32, bool) {
	id := q.next
	if id == 0 {
		return 0, false // ran out
	}
	q.next += q.step
	if q.next <= id {
		q.next = 0 // wrapped: this was the last id
	}
	return id, true
}

// streamSlots counts live streams against the limit of concurrent streams.
// A stream takes a slot when it starts (hub: at its OPEN; edge: before its
// OPEN is sent) and gives it back when it finishes.
type streamSlots struct {
	max int64
	n   atomic.Int64
}

func newStreamSlots(max int) *streamSlots { return &streamSlots{max: int64(max)} }

// take takes a slot; false when all are in use.
func (l *streamSlots) take() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

func (l *streamSlots) release() { l.n.Add(-1) }

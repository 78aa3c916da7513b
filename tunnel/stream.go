package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// stream is one client connection carried over a session.
//
//   - upstream: its own goroutine reads the local socket (only as much as
//     the peer's window allows) and writes DATA frames itself; EOF becomes
//     our FIN (CLOSE/CLOSE_BACK).
//   - downstream: the session reader hands each DATA payload to the stream,
//     which writes it to the socket at once without blocking when the socket
//     takes it; what the socket does not take waits in a queue that a drain
//     goroutine writes out. Credit goes back to the peer in batches, and the
//     peer's FIN becomes CloseWrite once the queue is empty.
//
// The stream ends when both FINs are through, or at once when aborted.
type stream struct {
	id   uint32
	sess *session
	hdr  proxyproto.Header // what the OPEN carried (hub)
	conn net.Conn
	rd   *connReader
	wr   *connWriter

	wuPending uint32 // credit not yet sent; guarded by sess.ctrl.mu

	mu          sync.Mutex
	state       streamState
	credit      int64         // bytes we may still send
	creditCh    chan struct{} // signalled when credit grows
	recvWindow  uint32        // our receive window; grows up to tuning.MaxWindow
	recvQ       []chunk       // peer bytes not yet written to conn
	recvUnacked uint32        // received and not yet credited back
	consumed    uint32        // written to conn, not yet credited back
	doneCh      chan struct{} // closed when the stream has finished
	sleepFD     int           // the socket's descriptor while hibernating
	earlyReset  string        // a reset asked for before the OPEN went out (edge)
	onDone      func()        // called once when the stream has finished (edge), or nil

	// Idleness, for session.sweepIdle: upstream counts its reads and says
	// when it waits in one; the sweeper asks an idle stream to hibernate.
	readSeq  atomic.Uint32
	inRead   atomic.Bool
	sleepy   atomic.Bool // hibernation asked for: the read deadline is in the past
	sweptSeq uint32      // readSeq at the last sweep; the sweeper's own
}

// streamState is the state of a stream, guarded by stream.mu: one bit per
// fact. The two directions close independently (our FIN, the peer's FIN
// and the CloseWrite that follows it), so a stream can be half-closed from
// both sides at once, which is no reset; it has ended normally when both
// directions are closed, or at once when aborted. Every bit but writing and
// blockedSent is set once and never cleared.
type streamState uint16

const (
	stReady       streamState = 1 << iota // conn is attached (hub: dialled and header written)
	stWriting                             // someone (the reader or the drain goroutine) writes to conn
	stBlockedSent                         // BLOCKED sent since credit last arrived
	stRemoteFin                           // the peer's FIN arrived
	stWrClosed                            // CloseWrite done on conn, after the peer's FIN and the bytes before it
	stLocalFin                            // our FIN is sent
	stAborted                             // ended at once: conn reset, queued bytes dropped
	stFinished                            // gone: doneCh closed, removed from the session
	stHibernating                         // idle: no upstream goroutine, the socket is in the idle poller
	stOpenSent                            // the OPEN is written (edge): the stream has its id
)

// has reports whether every bit of f is set.
func (s streamState) has(f streamState) bool { return s&f == f }

func (s *streamState) set(f streamState)   { *s |= f }
func (s *streamState) clear(f streamState) { *s &^= f }

// ended: aborted or finished, nothing more happens.
func (s streamState) ended() bool { return s&(stAborted|stFinished) != 0 }

// finPending: the peer's FIN waits to become our CloseWrite.
func (s streamState) finPending() bool { return s&(stRemoteFin|stWrClosed) == stRemoteFin }

// closedBothWays: our FIN is sent and the peer's went through CloseWrite,
// and the stream has not ended otherwise.
func (s streamState) closedBothWays() bool {
	return s&(stLocalFin|stWrClosed|stAborted|stFinished) == stLocalFin|stWrClosed
}

// chunk is a queued payload: (*bp)[off:] is still to be written.
type chunk struct {
	bp  *[]byte
	off int
}

func newStream(s *session, id uint32, conn net.Conn) *stream {
	st := &stream{
		id: id, sess: s,
		credit: int64(s.peerWindow), creditCh: make(chan struct{}, 1), doneCh: make(chan struct{}),
		recvWindow: s.tuning.Window,
	}
	if conn != nil {
		st.setConnLocked(conn)
	}
	return st
}

// attach gives a hub stream its dialled target. It reports false, and closes
// conn, when the stream was aborted meanwhile.
func (st *stream) attach(conn net.Conn) bool {
	st.mu.Lock()
	if st.state.has(stAborted) {
		st.mu.Unlock()
		_ = conn.Close()
		return false
	}
	st.setConnLocked(conn)
	st.kickLocked()
	st.mu.Unlock()
	return true
}

func (st *stream) setConnLocked(conn net.Conn) {
	st.conn, st.rd, st.wr = conn, newConnReader(conn), newConnWriter(conn)
	st.state.set(stReady)
}

// backloggedLocked reports whether peer bytes cannot go to conn at once:
// conn is not attached yet, someone writes to it, or bytes wait in recvQ.
func (st *stream) backloggedLocked() bool {
	return !st.state.has(stReady) || st.state.has(stWriting) || len(st.recvQ) > 0
}

// kickLocked starts a drain goroutine when there is something to drain.
func (st *stream) kickLocked() {
	if st.state&(stReady|stWriting|stAborted) == stReady && (len(st.recvQ) > 0 || st.state.finPending()) {
		st.state.set(stWriting)
		st.sess.goSafe(st.drain)
	}
}

// pushData takes a DATA payload from the peer, whose bytes reserve has
// counted against the window; bp is owned by the stream now. It is called by
// the session reader only, and never blocks.
func (st *stream) pushData(bp *[]byte) error {
	st.mu.Lock()
	if st.state.has(stAborted) {
		st.mu.Unlock()
		putBuf(bp)
		return nil
	}
	if st.state.has(stRemoteFin) {
		st.mu.Unlock()
		putBuf(bp)
		return protoErr("data for stream %d after its close", st.id)
	}
	if st.backloggedLocked() {
		st.queueLocked(bp)
		st.kickLocked()
		st.mu.Unlock()
		return nil
	}
	// Fast path: nobody is writing to conn; try it now, without waiting.
	st.state.set(stWriting)
	st.mu.Unlock()
	w, err := st.wr.tryWrite(*bp)
	if err != nil {
		putBuf(bp)
		st.mu.Lock()
		st.state.clear(stWriting)
		st.mu.Unlock()
		st.abort(fmt.Sprintf("write failed: %v", err), true)
		return nil
	}
	st.mu.Lock()
	st.state.clear(stWriting)
	if st.state.has(stAborted) {
		st.mu.Unlock()
		putBuf(bp)
		return nil
	}
	credit := st.consumedLocked(w)
	if w < len(*bp) {
		st.recvQ = append(st.recvQ, chunk{bp: bp, off: w})
		st.kickLocked()
	} else {
		putBuf(bp)
	}
	st.mu.Unlock()
	if credit > 0 {
		st.sess.ctrl.windowUpdate(st, credit)
	}
	return nil
}

// queueLocked appends a payload to recvQ. One that fits in the spare room of
// the last queued buffer is copied there: a peer sending a window's worth of
// one-byte frames then costs about a window of memory, not a pooled buffer
// per frame.
func (st *stream) queueLocked(bp *[]byte) {
	if n := len(st.recvQ); n > 0 {
		tail := st.recvQ[n-1].bp
		if p := *bp; cap(*tail)-len(*tail) >= len(p) {
			*tail = append(*tail, p...)
			putBuf(bp)
			return
		}
	}
	st.recvQ = append(st.recvQ, chunk{bp: bp})
}

// reserve counts a DATA frame of n bytes against the window before its
// payload is read, so that nothing is allocated for a frame the window does
// not allow. A stream that is gone or closed by the peer counts nothing:
// pushData drops or rejects the payload then.
func (st *stream) reserve(n uint32) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.state&(stAborted|stRemoteFin) != 0 {
		return nil
	}
	if uint64(st.recvUnacked)+uint64(n) > uint64(st.recvWindow) {
		return protoErr("stream %d overran its window (%d bytes outstanding, window %d)", st.id, uint64(st.recvUnacked)+uint64(n), st.recvWindow)
	}
	st.recvUnacked += n
	return nil
}

// peerBlocked handles BLOCKED: the peer used up its credit for this stream
// while it had more to send. Everything it sent before is here (frames
// arrive in order), so when none of it waits for our socket, the window and
// not our reader is what limits the stream: it doubles, up to MaxWindow, and
// the growth goes out as credit at once. A stream whose reader lags keeps
// its window, so what it can hold here stays bounded by it.
func (st *stream) peerBlocked() {
	st.mu.Lock()
	maxW := st.sess.tuning.MaxWindow
	if st.state&(stAborted|stRemoteFin) != 0 || st.backloggedLocked() || st.recvWindow >= maxW {
		st.mu.Unlock()
		return
	}
	s := st.sess
	grow := min(st.recvWindow, maxW-st.recvWindow)
	if s.grown.Add(int64(grow)) > int64(s.tuning.WindowBudget) {
		s.grown.Add(-int64(grow)) // the tunnel's budget is spent
		st.mu.Unlock()
		return
	}
	st.recvWindow += grow
	credit := grow + st.consumed
	st.recvUnacked -= st.consumed
	st.consumed = 0
	st.mu.Unlock()
	s.ctrl.windowUpdate(st, credit)
}

// consumedLocked records n bytes written to conn and returns the credit to
// send back, if a batch (a quarter window) is complete.
func (st *stream) consumedLocked(n int) uint32 {
	st.consumed += uint32(n)
	if st.consumed < st.recvWindow/4 {
		return 0
	}
	credit := st.consumed
	st.recvUnacked -= credit
	st.consumed = 0
	return credit
}

// remoteFinish records the peer's FIN; with nothing left to write it shuts
// down conn's write side at once.
func (st *stream) remoteFinish() error {
	st.mu.Lock()
	if st.state.has(stAborted) {
		st.mu.Unlock()
		return nil
	}
	if st.state.has(stRemoteFin) {
		st.mu.Unlock()
		return protoErr("second close for stream %d", st.id)
	}
	st.state.set(stRemoteFin)
	if st.backloggedLocked() {
		st.kickLocked()
		st.mu.Unlock()
		return nil
	}
	st.state.set(stWrClosed)
	st.mu.Unlock()
	st.shutdownWrite()
	return nil
}

// shutdownWrite half-closes conn after the peer's FIN.
func (st *stream) shutdownWrite() {
	if err := closeWrite(st.conn); err != nil {
		st.abort(fmt.Sprintf("half-close failed: %v", err), true)
		return
	}
	st.finishIfDone()
}

// addCredit applies a WINDOW_UPDATE.
func (st *stream) addCredit(inc uint32) error {
	if inc == 0 {
		return protoErr("zero window update for stream %d", st.id)
	}
	st.mu.Lock()
	st.credit += int64(inc)
	st.state.clear(stBlockedSent)
	over := st.credit > int64(maxWindow)*2
	st.mu.Unlock()
	if over {
		return protoErr("window of stream %d grew beyond any window", st.id)
	}
	select {
	case st.creditCh <- struct{}{}:
	default:
	}
	return nil
}

// drain writes queued peer bytes to conn, blocking, until the queue is empty.
func (st *stream) drain() {
	for {
		st.mu.Lock()
		if st.state.has(stAborted) {
			st.state.clear(stWriting)
			st.mu.Unlock()
			return
		}
		if len(st.recvQ) == 0 {
			st.state.clear(stWriting)
			fin := st.state.finPending()
			if fin {
				st.state.set(stWrClosed)
			}
			st.mu.Unlock()
			if fin {
				st.shutdownWrite()
			}
			return
		}
		c := st.recvQ[0]
		st.recvQ[0] = chunk{}
		st.recvQ = st.recvQ[1:]
		if len(st.recvQ) == 0 {
			st.recvQ = nil
		}
		st.mu.Unlock()

		n, err := st.conn.Write((*c.bp)[c.off:])
		putBuf(c.bp)
		if err != nil {
			st.mu.Lock()
			st.state.clear(stWriting)
			st.mu.Unlock()
			st.abort(fmt.Sprintf("write failed: %v", err), true)
			return
		}
		st.mu.Lock()
		credit := st.consumedLocked(n)
		st.mu.Unlock()
		if credit > 0 {
			st.sess.ctrl.windowUpdate(st, credit)
		}
	}
}

// testHookUpstreamEOF, when a test sets it, runs where upstream checks
// whether an EOF was a reset.
var testHookUpstreamEOF atomic.Pointer[func()]

// upstream reads conn and sends its bytes to the peer, one frame per read,
// written by this goroutine itself. Reads start small and double while they
// fill their buffer, up to maxDataFrame: a bulk transfer moves 256 KiB per
// read, lock and frame (a quarter of the system calls and hand-offs of
// 64 KiB frames), while a stream of small messages holds a 16 KiB buffer
// per read, not a 256 KiB one.
func (st *stream) upstream() {
	dataType, closeType := streamFrames(st.sess.isHub)
	chunk := minReadChunk
	for {
		credit, ok := st.waitCredit()
		if !ok {
			return
		}
		limit := min(credit, chunk)
		st.inRead.Store(true)
		bp, n, err := st.rd.read(limit)
		st.inRead.Store(false)
		st.readSeq.Add(1)
		if n == 0 && st.sleepy.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
			if st.hibernate() {
				return
			}
			continue
		}
		chunk = nextReadChunk(chunk, limit, n)
		if n > 0 {
			st.mu.Lock()
			st.credit -= int64(n)
			st.mu.Unlock()
			werr := st.sess.writeData(st.id, dataType, (*bp)[:headerLen+n])
			putBuf(bp)
			if werr != nil {
				st.abort("tunnel closed", false)
				return
			}
			st.sess.stats.sent.Add(uint64(n))
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			// A reset whose ECONNRESET the drain side consumed reads as EOF
			// here; it must reach the peer as a reset, not a clean close.
			// The check holds st.mu: our own CloseWrite (decided under
			// st.mu) would take the socket from CLOSE_WAIT through LAST_ACK
			// to CLOSE as well, which must not be mistaken for a reset.
			st.mu.Lock()
			if hook := testHookUpstreamEOF.Load(); hook != nil {
				(*hook)()
			}
			reset := !st.state.has(stWrClosed) && wasReset(st.conn)
			st.mu.Unlock()
			if reset {
				st.abort("connection reset", true)
				return
			}
			if st.sess.writeData(st.id, closeType, make([]byte, headerLen)) != nil {
				st.abort("tunnel closed", false)
				return
			}
			st.mu.Lock()
			st.state.set(stLocalFin)
			st.mu.Unlock()
			st.finishIfDone()
			return
		}
		st.abort(fmt.Sprintf("read failed: %v", err), true)
		return
	}
}

// hibernate ends the upstream goroutine of a stream that the sweeper found
// idle, and hands its socket to the session's idle poller, which starts
// upstream again when the socket becomes readable: an idle stream then costs
// no goroutine, and no stack grown by its last write through TLS. It reports
// false when the stream must go on as it was (no poller, no descriptor).
func (st *stream) hibernate() bool {
	_ = st.conn.SetReadDeadline(time.Time{})
	st.sleepy.Store(false)
	p := st.sess.idle()
	if p == nil {
		return false
	}
	fd := st.rd.fd()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.state.ended() {
		return true // aborted meanwhile: upstream has nothing left to do
	}
	if fd < 0 || !p.add(fd, st) {
		return false
	}
	st.state.set(stHibernating)
	st.sleepFD = fd
	return true
}

// wakeUp starts upstream again for a hibernating stream whose socket is
// readable. The idle poller calls it.
func (st *stream) wakeUp() {
	st.mu.Lock()
	if !st.state.has(stHibernating) || st.state.ended() {
		st.mu.Unlock()
		return
	}
	st.state.clear(stHibernating)
	st.mu.Unlock()
	st.sess.goSafe(st.upstream)
}

// nextReadChunk is the read size after a read of n bytes with the given
// limit: doubled when the read filled a full-size buffer, kept when only the
// peer's credit cut it short, back to the smallest when the socket had no
// more than that for it.
func nextReadChunk(chunk, limit, n int) int {
	switch {
	case n == limit && limit == chunk:
		return min(2*(chunk+headerLen), maxDataFrame+headerLen) - headerLen // twice the buffer
	case n == limit:
		return chunk
	case n <= minReadChunk:
		return minReadChunk
	}
	return chunk
}

// waitCredit blocks until the peer's window is open; false when the stream ended.
func (st *stream) waitCredit() (int, bool) {
	for {
		st.mu.Lock()
		c, aborted := st.credit, st.state.has(stAborted)
		tell := c <= 0 && !aborted && !st.state.has(stBlockedSent) && st.sess.autotune
		if tell {
			st.state.set(stBlockedSent)
		}
		st.mu.Unlock()
		if aborted {
			return 0, false
		}
		if c > 0 {
			return int(c), true
		}
		if tell {
			st.sess.ctrl.blocked(st.id)
		}
		select {
		case <-st.creditCh:
		case <-st.doneCh:
			return 0, false
		}
	}
}

// abort ends the stream at once: the local socket is reset, queued bytes are
// dropped and, when sendReset, the peer is told with a RESET frame.
func (st *stream) abort(reason string, sendReset bool) {
	st.mu.Lock()
	if st.state.ended() {
		st.mu.Unlock()
		return
	}
	st.state.set(stAborted)
	// Queued chunks belong to the queue; a writer in progress holds only the
	// one it took out and returns it itself.
	for _, c := range st.recvQ {
		putBuf(c.bp)
	}
	st.recvQ = nil
	conn := st.conn
	if st.state.has(stHibernating) {
		st.state.clear(stHibernating)
		st.sess.idle().remove(st.sleepFD, st)
	}
	st.mu.Unlock()
	if sendReset && st.id != 0 {
		st.sess.ctrl.reset(st.id, reason)
	}
	st.sess.log.Debug("stream aborted", "stream", st.id, "reason", reason)
	if conn != nil {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = conn.Close()
	}
	st.finish()
}

// finishIfDone ends the stream normally once both directions are closed.
func (st *stream) finishIfDone() {
	st.mu.Lock()
	done := st.state.closedBothWays()
	st.mu.Unlock()
	if done {
		_ = st.conn.Close()
		st.finish()
	}
}

func (st *stream) finish() {
	st.mu.Lock()
	if st.state.has(stFinished) {
		st.mu.Unlock()
		return
	}
	st.state.set(stFinished)
	close(st.doneCh)
	grown := st.recvWindow - st.sess.tuning.Window
	st.mu.Unlock()
	st.sess.grown.Add(-int64(grown))
	st.sess.removeStream(st)
	st.sess.slots.release()
	st.sess.stats.closed.Add(1)
	if st.sess.hooks.closed != nil {
		st.sess.hooks.closed(st)
	}
	if st.onDone != nil {
		st.onDone()
	}
}

// resetOpened aborts a stream this side opened (edge), telling the peer. A
// stream whose OPEN has not gone out yet is aborted right after it has, so
// that the peer never keeps a stream it was not told the end of.
func (st *stream) resetOpened(reason string) {
	st.mu.Lock()
	if !st.state.has(stOpenSent) {
		st.earlyReset = reason
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	st.abort(reason, true)
}

// openSent records that the OPEN went out; false when a reset was asked for
// meanwhile, which it then carries out.
func (st *stream) openSent() bool {
	st.mu.Lock()
	st.state.set(stOpenSent)
	reason := st.earlyReset
	st.mu.Unlock()
	if reason != "" {
		st.abort(reason, true)
		return false
	}
	return true
}

type closeWriter interface{ CloseWrite() error }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

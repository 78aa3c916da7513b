package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// stream is one client connection carried over a session. Its bytes move in
// two directions, each with its own goroutine while there is work:
//
//   - upstream: read the local socket (only as much as the peer's window
//     allows) and send DATA frames; EOF becomes our FIN (CLOSE/CLOSE_BACK).
//   - drain: write the frames the peer sent to the local socket, give the
//     window back in batches, and turn the peer's FIN into CloseWrite.
//
// The stream ends when both FINs are through, or at once when aborted.
type stream struct {
	id   uint32
	sess *session
	conn net.Conn
	rd   *connReader

	// Handoff to the session writer, guarded by sess.wmu.
	wtype     FrameType
	wbuf      []byte
	wdone     chan error
	wuPending uint32

	mu          sync.Mutex
	credit      int64         // bytes we may still send
	creditCh    chan struct{} // signalled when credit grows
	recvQ       []*[]byte     // peer bytes not yet written to conn
	recvUnacked uint32        // received and not yet credited back
	consumed    uint32        // written to conn, not yet credited back
	ready       bool          // conn is attached (hub: dialled and header written)
	draining    bool          // a drain goroutine is running
	remoteFin   bool
	wrClosed    bool // CloseWrite done on conn
	localFin    bool // our FIN is sent
	aborted     bool
	finished    bool
	doneCh      chan struct{}
}

func newStream(s *session, id uint32, conn net.Conn) *stream {
	st := &stream{
		id: id, sess: s, wdone: make(chan error, 1),
		credit: int64(s.peerWindow), creditCh: make(chan struct{}, 1), doneCh: make(chan struct{}),
	}
	if conn != nil {
		st.conn, st.rd, st.ready = conn, newConnReader(conn), true
	}
	return st
}

// attach gives a hub stream its dialled target. It reports false, and closes
// conn, when the stream was aborted meanwhile.
func (st *stream) attach(conn net.Conn) bool {
	st.mu.Lock()
	if st.aborted {
		st.mu.Unlock()
		_ = conn.Close()
		return false
	}
	st.conn, st.rd, st.ready = conn, newConnReader(conn), true
	st.kickLocked()
	st.mu.Unlock()
	return true
}

// kickLocked starts a drain goroutine when there is something to drain.
func (st *stream) kickLocked() {
	if st.ready && !st.draining && !st.aborted && (len(st.recvQ) > 0 || (st.remoteFin && !st.wrClosed)) {
		st.draining = true
		st.sess.goSafe(st.drain)
	}
}

// pushData queues a DATA payload from the peer; bp is owned by the stream now.
func (st *stream) pushData(bp *[]byte) error {
	n := uint32(len(*bp))
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.aborted {
		putBuf(bp)
		return nil
	}
	if st.remoteFin {
		putBuf(bp)
		return protoErr("data for stream %d after its close", st.id)
	}
	if uint64(st.recvUnacked)+uint64(n) > uint64(st.sess.tuning.Window) {
		putBuf(bp)
		return protoErr("stream %d overran its window (%d bytes outstanding, window %d)", st.id, uint64(st.recvUnacked)+uint64(n), st.sess.tuning.Window)
	}
	st.recvUnacked += n
	st.recvQ = append(st.recvQ, bp)
	st.kickLocked()
	return nil
}

// remoteFin records the peer's FIN.
func (st *stream) remoteFinish() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.aborted {
		return nil
	}
	if st.remoteFin {
		return protoErr("second close for stream %d", st.id)
	}
	st.remoteFin = true
	st.kickLocked()
	return nil
}

// addCredit applies a WINDOW_UPDATE.
func (st *stream) addCredit(inc uint32) error {
	if inc == 0 {
		return protoErr("zero window update for stream %d", st.id)
	}
	st.mu.Lock()
	st.credit += int64(inc)
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

// buffered is the number of peer bytes waiting to be written to conn.
func (st *stream) buffered() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, bp := range st.recvQ {
		n += len(*bp)
	}
	return n
}

// drain writes queued peer bytes to conn until the queue is empty.
func (st *stream) drain() {
	threshold := st.sess.tuning.Window / 4
	for {
		st.mu.Lock()
		if st.aborted {
			st.draining = false
			st.mu.Unlock()
			return
		}
		if len(st.recvQ) == 0 {
			fin := st.remoteFin && !st.wrClosed
			if !fin {
				st.draining = false
				st.mu.Unlock()
				return
			}
			st.wrClosed = true
			st.draining = false
			st.mu.Unlock()
			if err := closeWrite(st.conn); err != nil {
				st.abort(fmt.Sprintf("half-close failed: %v", err), true)
				return
			}
			st.finishIfDone()
			return
		}
		bp := st.recvQ[0]
		st.recvQ[0] = nil
		st.recvQ = st.recvQ[1:]
		if len(st.recvQ) == 0 {
			st.recvQ = st.recvQ[:0:0]
		}
		st.mu.Unlock()

		n, err := st.conn.Write(*bp)
		putBuf(bp)
		if err != nil {
			st.abort(fmt.Sprintf("write failed: %v", err), true)
			return
		}
		st.mu.Lock()
		st.consumed += uint32(n)
		var credit uint32
		if st.consumed >= threshold {
			credit = st.consumed
			st.recvUnacked -= credit
			st.consumed = 0
		}
		st.mu.Unlock()
		if credit > 0 {
			st.sess.queueWindowUpdate(st, credit)
		}
	}
}

// upstream reads conn and sends its bytes to the peer.
func (st *stream) upstream() {
	dataType, closeType := st.sess.dataType(), st.sess.closeType()
	for {
		limit, ok := st.waitCredit()
		if !ok {
			return
		}
		bp, n, err := st.rd.read(min(limit, maxDataFrame))
		if n > 0 {
			st.mu.Lock()
			st.credit -= int64(n)
			st.mu.Unlock()
			serr := st.sess.sendStreamFrame(st, dataType, (*bp)[:n])
			putBuf(bp)
			if serr != nil {
				st.abort("tunnel closed", false)
				return
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			if st.sess.sendStreamFrame(st, closeType, nil) != nil {
				st.abort("tunnel closed", false)
				return
			}
			st.mu.Lock()
			st.localFin = true
			st.mu.Unlock()
			st.finishIfDone()
			return
		}
		st.abort(fmt.Sprintf("read failed: %v", err), true)
		return
	}
}

// waitCredit blocks until the peer's window is open; false when the stream ended.
func (st *stream) waitCredit() (int, bool) {
	for {
		st.mu.Lock()
		c, aborted := st.credit, st.aborted
		st.mu.Unlock()
		if aborted {
			return 0, false
		}
		if c > 0 {
			return int(c), true
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
	if st.aborted || st.finished {
		st.mu.Unlock()
		return
	}
	st.aborted = true
	for _, bp := range st.recvQ {
		putBuf(bp)
	}
	st.recvQ = nil
	conn := st.conn
	st.mu.Unlock()
	if sendReset {
		st.sess.queueReset(st.id, reason)
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
	done := st.localFin && st.wrClosed && !st.aborted && !st.finished
	st.mu.Unlock()
	if done {
		_ = st.conn.Close()
		st.finish()
	}
}

func (st *stream) finish() {
	st.mu.Lock()
	if st.finished {
		st.mu.Unlock()
		return
	}
	st.finished = true
	close(st.doneCh)
	st.mu.Unlock()
	st.sess.removeStream(st)
	if st.sess.hooks.closed != nil {
		st.sess.hooks.closed(st)
	}
}

type closeWriter interface{ CloseWrite() error }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

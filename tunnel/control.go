package tunnel

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// controlQueue holds the control frames that the session reader and the
// timers produce until the next holder of the write lock writes them
// (writer.go): the latest PONG and PING, RESETs, BLOCKEDs and the credit of
// each stream (coalesced per stream), and the GOAWAY reason for the end.
type controlQueue struct {
	mu      sync.Mutex
	pending atomic.Bool   // something is queued; lock holders look without mu
	wake    chan struct{} // wakes the control goroutine

	// Guarded by mu.
	wuQ                []*stream // streams with credit to send (stream.wuPending)
	resetQ             []resetReq
	blockedQ           []uint32 // streams to send BLOCKED for
	ping, pong         bool
	pingPinned         bool // the queued PING is a sync's: a keepalive one does not replace it
	pingData, pongData [8]byte
	msgQ               []controlMsg // ASSIGN and BOUND, in order
	goAway             string
}

// controlMsg is a stream-0 frame with a payload of its own (ASSIGN, BOUND).
type controlMsg struct {
	t frameType
	p []byte
}

type resetReq struct {
	id     uint32
	reason string
}

func newControlQueue() controlQueue { return controlQueue{wake: make(chan struct{}, 1)} }

// push queues a frame: add runs under the queue's lock, then writers are
// told that there is something to write.
func (q *controlQueue) push(add func()) {
	q.mu.Lock()
	add()
	q.mu.Unlock()
	q.pending.Store(true)
	q.signal()
}

// signal wakes the control goroutine.
func (q *controlQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// windowUpdate queues n bytes of credit for st, added to any not yet sent.
func (q *controlQueue) windowUpdate(st *stream, n uint32) {
	q.push(func() {
		if st.wuPending == 0 {
			q.wuQ = append(q.wuQ, st)
		}
		st.wuPending += n
	})
}

// blocked queues a BLOCKED for stream id.
func (q *controlQueue) blocked(id uint32) {
	q.push(func() { q.blockedQ = append(q.blockedQ, id) })
}

// reset queues a RESET for stream id; the reason is cut to maxResetReason.
func (q *controlQueue) reset(id uint32, reason string) {
	if len(reason) > maxResetReason {
		reason = reason[:maxResetReason]
	}
	q.push(func() { q.resetQ = append(q.resetQ, resetReq{id: id, reason: reason}) })
}

// pingNow queues a PING carrying seq, replacing one not yet sent (but a
// sync's).
func (q *controlQueue) pingNow(seq uint64) {
	q.push(func() {
		if q.pingPinned {
			return
		}
		binary.BigEndian.PutUint64(q.pingData[:], seq)
		q.ping = true
	})
}

// syncPing queues the PING of a sync, carrying seq; it replaces any PING
// not yet sent, and no later one replaces it before it is written.
func (q *controlQueue) syncPing(seq uint64) {
	q.push(func() {
		binary.BigEndian.PutUint64(q.pingData[:], seq)
		q.ping, q.pingPinned = true, true
	})
}

// pongFor queues the PONG answering a PING's payload p (8 bytes), replacing
// one not yet sent.
func (q *controlQueue) pongFor(p []byte) {
	q.push(func() {
		copy(q.pongData[:], p)
		q.pong = true
	})
}

// message queues a stream-0 frame of type t carrying p, which the queue
// then owns; such frames go out in the order they were queued.
func (q *controlQueue) message(t frameType, p []byte) {
	q.push(func() { q.msgQ = append(q.msgQ, controlMsg{t: t, p: p}) })
}

// setGoAway sets the reason the final GOAWAY gives.
func (q *controlQueue) setGoAway(reason string) {
	q.mu.Lock()
	q.goAway = reason
	q.mu.Unlock()
}

func (q *controlQueue) goAwayReason() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.goAway
}

// take moves everything queued into b; false when nothing was queued.
func (q *controlQueue) take(b *controlBatch) bool {
	if !q.pending.Load() {
		return false
	}
	q.mu.Lock()
	q.pending.Store(false)
	b.resets = append(b.resets[:0], q.resetQ...)
	q.resetQ = q.resetQ[:0]
	b.blocked = append(b.blocked[:0], q.blockedQ...)
	q.blockedQ = q.blockedQ[:0]
	b.wus, b.wuVals = b.wus[:0], b.wuVals[:0]
	for _, st := range q.wuQ {
		b.wus = append(b.wus, st)
		b.wuVals = append(b.wuVals, st.wuPending)
		st.wuPending = 0
	}
	clear(q.wuQ)
	q.wuQ = q.wuQ[:0]
	b.msgs = append(b.msgs[:0], q.msgQ...)
	clear(q.msgQ)
	q.msgQ = q.msgQ[:0]
	b.ping, b.pong = q.ping, q.pong
	b.pingData, b.pongData = q.pingData, q.pongData
	q.ping, q.pong, q.pingPinned = false, false, false
	q.mu.Unlock()
	return true
}

// controlBatch is what take moved out of the queue: the write lock's
// scratch space, reused from turn to turn.
type controlBatch struct {
	ping, pong         bool
	pingData, pongData [8]byte
	resets             []resetReq
	blocked            []uint32
	wus                []*stream
	wuVals             []uint32
	msgs               []controlMsg
	u32                [4]byte
}

// writeTo writes the batch in the order of PROTOCOL.md §6: PONG, PING,
// RESETs, BLOCKEDs, WINDOW_UPDATEs, then ASSIGN and BOUND. It stops at the
// first error.
func (b *controlBatch) writeTo(fw *frameWriter) error {
	var err error
	if b.pong {
		err = fw.WriteFrame(0, framePong, b.pongData[:])
	}
	if b.ping && err == nil {
		err = fw.WriteFrame(0, framePing, b.pingData[:])
	}
	for _, r := range b.resets {
		if err == nil {
			err = fw.WriteFrame(r.id, frameReset, []byte(r.reason))
		}
	}
	for _, id := range b.blocked {
		if err == nil {
			err = fw.WriteFrame(id, frameBlocked, nil)
		}
	}
	for i, st := range b.wus {
		if err == nil {
			binary.BigEndian.PutUint32(b.u32[:], b.wuVals[i])
			err = fw.WriteFrame(st.id, frameWindowUpdate, b.u32[:])
		}
	}
	clear(b.wus)
	for _, m := range b.msgs {
		if err == nil {
			err = fw.WriteFrame(0, m.t, m.p)
		}
	}
	clear(b.msgs)
	return err
}

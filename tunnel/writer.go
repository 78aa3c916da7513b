package tunnel

import (
	"fmt"
	"runtime"
)

// The write side of a session.
//
// Stream goroutines write their own frames while holding wlock, so moving a
// chunk from a socket into the tunnel takes no hand-off to another goroutine.
// Frames that the reader and the timers produce (PONG, PING, RESET,
// WINDOW_UPDATE) are queued and written first by whoever holds the lock next;
// the control goroutine takes the lock for them when no stream writes. Frames
// are coalesced in bw and flushed by the last writer out: one that finds
// nobody else waiting for the lock. Each stream writes one frame (≤ 256 KiB)
// per lock, and waiters get the lock in turn, so streams with data share the
// tunnel round-robin.

// directWriteMin is the frame size from which a frame bypasses the buffer:
// one TLS record's worth, which gains nothing from coalescing.
const directWriteMin = 16 << 10

// lockWriter takes the write lock; it fails once the tunnel cannot be written.
func (s *session) lockWriter() error {
	s.waiting.Add(1)
	s.wlock.Lock()
	s.waiting.Add(-1)
	if s.werr != nil {
		s.wlock.Unlock()
		return s.werr
	}
	return nil
}

// unlockWriter ends a turn at the write lock. err is what the writes under
// the lock returned. Unless they failed, it writes the control frames queued
// meanwhile and flushes when no other writer waits. A failure is kept as the
// tunnel's write error, which fails every later turn, and closes the
// tunnel. It releases the lock and returns the failure.
func (s *session) unlockWriter(err error) error {
	if err == nil {
		err = s.writeControlLocked()
	}
	if err == nil {
		err = s.writeUDPLocked()
	}
	if err == nil && s.waiting.Load() == 0 && s.bw.Buffered() > 0 {
		// Let goroutines that are runnable now (other streams whose sockets
		// just became readable) reach the lock: they then flush for us, and
		// their frames share one TLS record and one system call.
		runtime.Gosched()
		if s.waiting.Load() == 0 {
			err = s.bw.Flush()
		}
	}
	if err != nil && s.werr == nil {
		s.werr = err
	}
	s.wlock.Unlock()
	if err != nil {
		s.close(fmt.Errorf("connection lost: %w", err))
	}
	return err
}

// writeData writes one stream frame. frame holds headerLen bytes of room
// followed by the payload; the header is filled in here.
func (s *session) writeData(id uint32, t frameType, frame []byte) error {
	if err := s.lockWriter(); err != nil {
		return errSessionClosed
	}
	if s.ctx.Err() != nil {
		_ = s.unlockWriter(nil)
		return errSessionClosed
	}
	err := s.writeControlLocked()
	if err == nil {
		putHeader(frame[:headerLen], frameHeader{StreamID: id, Type: t, Length: uint32(len(frame) - headerLen)})
		if len(frame) < directWriteMin {
			_, err = s.bw.Write(frame) // small: coalesce
		} else {
			// Large: straight to TLS, without copying it through the buffer.
			if s.bw.Buffered() > 0 {
				err = s.bw.Flush()
			}
			if err == nil {
				_, err = s.conn.Write(frame)
			}
		}
	}
	if s.unlockWriter(err) != nil {
		return errSessionClosed
	}
	return nil
}

// writeOpen registers st under the next stream id and writes its OPEN,
// both under the write lock, so OPENs go out in id order.
func (s *session) writeOpen(st *stream, header []byte) error {
	if err := s.lockWriter(); err != nil {
		return errSessionClosed
	}
	// Every way out goes through unlockWriter: a writer before us may have
	// left its frames unflushed because we were waiting.
	if err := s.allocID(st); err != nil {
		_ = s.unlockWriter(nil)
		if err == errIDsExhausted {
			s.close(err)
		}
		return err
	}
	err := s.writeControlLocked()
	if err == nil {
		err = s.fw.WriteFrame(st.id, frameOpen, header)
	}
	return s.unlockWriter(err)
}

// writeControlLocked writes the queued control frames; the caller holds wlock.
func (s *session) writeControlLocked() error {
	if !s.ctrl.take(&s.batch) {
		return nil
	}
	return s.batch.writeTo(s.fw)
}

// controlWriter writes queued control frames when no stream is writing, and
// at the end the GOAWAY; then it closes the connection.
func (s *session) controlWriter() {
	defer close(s.writerDone)
	defer func() { _ = s.conn.Close() }()
	var perr error
	defer s.closeOnPanic(&perr)
	defer recoverInto(s.log, "the tunnel writer", &perr)
	for {
		select {
		case <-s.ctrl.wake:
			if s.lockWriter() != nil {
				<-s.done()
				s.finalWrite()
				return
			}
			_ = s.unlockWriter(nil)
			if s.udp.pending.Load() {
				s.ctrl.signal() // more datagrams: another turn, after the streams waiting
			}
		case <-s.done():
			s.finalWrite()
			return
		}
	}
}

// finalWrite sends the GOAWAY, if there is a reason to give, and stops all
// further writes. close() has set a write deadline, so it cannot hang.
func (s *session) finalWrite() {
	s.waiting.Add(1)
	s.wlock.Lock()
	s.waiting.Add(-1)
	defer s.wlock.Unlock()
	if s.werr != nil {
		return
	}
	s.werr = errSessionClosed
	reason := s.ctrl.goAwayReason()
	if reason == "" {
		return
	}
	if len(reason) > maxGoAway {
		reason = reason[:maxGoAway]
	}
	if s.fw.WriteFrame(0, frameGoAway, []byte(reason)) == nil {
		_ = s.bw.Flush()
	}
}

package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// The QUIC transport (PROTOCOL.md section 12): the second implementation of
// the seam of transport.go. One QUIC connection is one tunnel connection.
// The edge opens the connection's first stream, the control stream: the
// handshake of auth.go runs on it, bound to the QUIC connection's TLS
// exporter, and after it the stream carries the frames of stream 0 (PING,
// PONG, GOAWAY, ASSIGN, BOUND, DRAIN) and the flows' UDP_OPEN and
// UDP_CLOSE. Every client connection is a QUIC stream of its own that starts
// with one OPEN frame (its PROXY v1 header) and then carries the client's
// bytes; FIN is the half-close, RESET_STREAM and STOP_SENDING the reset.
// QUIC's own stream and connection windows bound what a stalled reader
// holds. Datagrams ride QUIC datagrams (quicdgram.go).

// Transports (EdgeConfig.Transport).
const (
	// TransportTLS is TLS over TCP, the frame mux of session.go.
	TransportTLS = "tls"
	// TransportQUIC is QUIC over UDP.
	TransportQUIC = "quic"
	// TransportAuto tries QUIC and falls back to TLS (EdgeConfig.QUICFallback).
	TransportAuto = "auto"
	// DefaultTransport is the edge's default (README "Transports" says why).
	DefaultTransport = TransportTLS
	// DefaultQUICFallback is how long TransportAuto waits for QUIC.
	DefaultQUICFallback = 3 * time.Second
)

// quicALPN is the ALPN protocol of the QUIC tunnel.
const quicALPN = "remoteingress/1"

// Application error codes of the QUIC transport: CONNECTION_CLOSE carries
// quicCloseCode and the reason; stream resets carry one of the others.
const (
	quicCloseCode      quic.ApplicationErrorCode = 0x0
	quicCloseProtocol  quic.ApplicationErrorCode = 0x1
	quicStreamRefused  quic.StreamErrorCode      = 0x1 // the hub could not connect the stream
	quicStreamAborted  quic.StreamErrorCode      = 0x2 // a socket end was reset, or the stream aborted
	quicStreamNoAccept quic.StreamErrorCode      = 0x3 // this side accepts no streams
)

// quicCopyBuf and quicBulkBuf are the sizes of the buffers that copy
// between a QUIC stream and its socket (classes of the buffer pool,
// bufpool.go): a copy whose read fills its buffer moves to a bulk one, and
// back after a read of less than half a small one, so that a bulk transfer
// makes a quarter of the reads, writes and hand-offs to quic-go per byte.
// Neither direction holds a buffer while its stream is idle.
const (
	quicCopyBuf = largeBuf
	quicBulkBuf = hugeBuf
)

// nextCopySize is the buffer size for the read after one of n bytes into size.
func nextCopySize(size, n int) int {
	switch {
	case n >= size:
		return quicBulkBuf
	case n < quicCopyBuf/2:
		return quicCopyBuf
	}
	return size
}

// quicConfig is the QUIC configuration both sides use: the keepalive and
// dead-peer deadline of the TLS transport, receive windows from the
// tuning, datagrams on.
func quicConfig(t Tuning, hub bool) *quic.Config {
	c := &quic.Config{
		HandshakeIdleTimeout:           min(t.HandshakeTimeout, 5*time.Second),
		MaxIdleTimeout:                 t.KeepaliveTimeout,
		KeepAlivePeriod:                t.KeepaliveInterval,
		InitialStreamReceiveWindow:     uint64(t.Window),
		MaxStreamReceiveWindow:         uint64(t.MaxWindow),
		InitialConnectionReceiveWindow: uint64(t.Window) * 4,
		MaxConnectionReceiveWindow:     uint64(t.WindowBudget),
		MaxIncomingUniStreams:          -1,
		EnableDatagrams:                true,
	}
	if hub {
		c.MaxIncomingStreams = int64(t.MaxStreams) + 1 // and the control stream
	} else {
		c.MaxIncomingStreams = -1 // the hub opens no streams
	}
	return c
}

// quicTLSConfig is conf with the tunnel's ALPN.
func quicTLSConfig(conf *tls.Config) *tls.Config {
	c := conf.Clone()
	c.NextProtos = []string{quicALPN}
	return c
}

// quicHandshake is the control stream with the connection's TLS state: the
// handshakeConn of a QUIC connection.
type quicHandshake struct {
	*quic.Stream
	qc *quic.Conn
}

// ConnectionState implements handshakeConn.
func (h quicHandshake) ConnectionState() tls.ConnectionState { return h.qc.ConnectionState().TLS }

// quicConn is one authenticated QUIC tunnel connection (tunnelConn).
type quicConn struct {
	qc       *quic.Conn
	ctrl     *quic.Stream
	isHub    bool
	peerCaps uint32
	log      *slog.Logger
	tuning   Tuning
	slots    *streamSlots
	stats    *streamCounters
	active   atomic.Int64
	ctx      context.Context // ends with the connection

	// The control stream's writer: frames queued by Send, Sync, Close and
	// the flows, written in order by ctrlWriter.
	cmu     sync.Mutex
	cq      [][]byte
	cqFlows int // UDP_OPEN and UDP_CLOSE among cq
	cwake   chan struct{}

	syncMu   sync.Mutex
	syncSeq  uint64
	syncWait map[uint64]chan struct{}

	// Stream 0 and flows, as Serve sets them.
	message func(t frameType, payload []byte) error
	flows   *flowHandler
	dg      quicDatagrams

	closeOnce sync.Once
	streams   sync.WaitGroup
}

var _ tunnelConn = (*quicConn)(nil)

// newQUICConn wraps an authenticated QUIC connection whose control stream
// is ctrl; the control writer and the datagram sender start now, so Send
// works before Serve.
func newQUICConn(qc *quic.Conn, ctrl *quic.Stream, isHub bool, tuning Tuning, peer peerParams, log *slog.Logger) *quicConn {
	c := &quicConn{qc: qc, ctrl: ctrl, isHub: isHub, peerCaps: peer.caps, log: log, tuning: tuning,
		slots: newStreamSlots(tuning.MaxStreams), stats: new(streamCounters), ctx: qc.Context(),
		cwake: make(chan struct{}, 1), syncWait: make(map[uint64]chan struct{})}
	c.dg.init(c)
	go c.ctrlWriter()
	go c.dg.sender()
	return c
}

// goSafe runs f on a goroutine whose panic closes this connection only.
func (c *quicConn) goSafe(f func()) {
	go func() {
		defer func() {
			if v := recover(); v != nil {
				c.log.Error("panic in a tunnel goroutine; closing the tunnel connection", "panic", fmt.Sprint(v))
				c.closeWith(quicCloseProtocol, "internal error")
			}
		}()
		f()
	}()
}

// queueCtrl queues one frame for the control stream; flow frames beyond
// udpQueueCtl are refused (false).
func (c *quicConn) queueCtrl(id uint32, t frameType, payload []byte, flow bool) bool {
	b := make([]byte, headerLen+len(payload))
	putHeader(b, frameHeader{StreamID: id, Type: t, Length: uint32(len(payload))})
	copy(b[headerLen:], payload)
	c.cmu.Lock()
	if flow && c.cqFlows >= udpQueueCtl {
		c.cmu.Unlock()
		return false
	}
	if flow {
		c.cqFlows++
	}
	c.cq = append(c.cq, b)
	c.cmu.Unlock()
	select {
	case c.cwake <- struct{}{}:
	default:
	}
	return true
}

// ctrlWriter writes the queued control frames until the connection ends.
func (c *quicConn) ctrlWriter() {
	bw := bufio.NewWriterSize(c.ctrl, 4096)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.cwake:
		}
		c.cmu.Lock()
		q := c.cq
		c.cq, c.cqFlows = nil, 0
		c.cmu.Unlock()
		for _, b := range q {
			if _, err := bw.Write(b); err != nil {
				return
			}
		}
		if err := bw.Flush(); err != nil {
			return
		}
	}
}

// OpenStream implements tunnelConn.
func (c *quicConn) OpenStream(hdr proxyproto.Header, local net.Conn, done func()) (func(string), error) {
	if c.ctx.Err() != nil {
		return nil, errors.New("tunnel closed")
	}
	if !c.slots.take() {
		return nil, errors.New("too many streams")
	}
	qs, err := c.qc.OpenStream()
	if err != nil {
		c.slots.release()
		return nil, err
	}
	line := hdr.AppendV1(make([]byte, headerLen, headerLen+proxyproto.MaxV1Len))
	putHeader(line, frameHeader{Type: frameOpen, Length: uint32(len(line) - headerLen)})
	if _, err := qs.Write(line); err != nil {
		qs.CancelWrite(quicStreamAborted)
		qs.CancelRead(quicStreamAborted)
		c.slots.release()
		return nil, err
	}
	c.stats.opened.Add(1)
	qst := &quicStream{c: c, qs: qs, hdr: hdr}
	c.startRelay(qst, local, done)
	return qst.abortLocal, nil
}

// Serve implements tunnelConn.
func (c *quicConn) Serve(h *streamHandler) error {
	if h != nil {
		c.message, c.flows = h.message, h.flows
	}
	if c.isHub {
		c.goSafe(func() { c.acceptStreams(h) })
	}
	c.goSafe(c.dg.receiver)
	err := c.readCtrl()
	c.closeWith(quicCloseProtocol, err.Error())
	c.streams.Wait()
	c.dg.drain()
	return c.closeReason(err)
}

// closeReason turns how the connection ended into the error Serve returns:
// the peer's reason when it closed it, else what was seen here.
func (c *quicConn) closeReason(seen error) error {
	cause := context.Cause(c.ctx)
	var ae *quic.ApplicationError
	if errors.As(cause, &ae) {
		if ae.Remote {
			return &remoteCloseError{Reason: sanitizeReason([]byte(ae.ErrorMessage))}
		}
		if ae.ErrorCode == quicCloseCode {
			return &localCloseError{Reason: ae.ErrorMessage}
		}
		return seen
	}
	var ie *quic.IdleTimeoutError
	if errors.As(cause, &ie) {
		return fmt.Errorf("no keepalive from the peer for %s", c.tuning.KeepaliveTimeout)
	}
	if cause != nil {
		return cause
	}
	return seen
}

// readCtrl reads the control stream's frames until it fails.
func (c *quicConn) readCtrl() error {
	fr := newFrameReader(c.ctrl)
	fr.Limit = maxControlPayload
	for {
		h, p, err := fr.ReadFrame()
		if err != nil {
			if c.ctx.Err() != nil {
				return context.Cause(c.ctx)
			}
			if errors.Is(err, io.EOF) {
				return protoErr("the control stream ended")
			}
			return protoErr("control stream: %v", err)
		}
		if err := c.ctrlFrame(h, p); err != nil {
			return err
		}
	}
}

// maxControlPayload bounds a frame of the control stream (an ASSIGN with
// a long firewall list is the largest).
const maxControlPayload = 4 << 20

// ctrlFrame handles one frame of the control stream.
func (c *quicConn) ctrlFrame(h frameHeader, p []byte) error {
	switch h.Type {
	case framePing:
		if len(p) != 8 {
			return protoErr("PING of %d bytes", len(p))
		}
		c.queueCtrl(0, framePong, p, false)
	case framePong:
		if len(p) != 8 {
			return protoErr("PONG of %d bytes", len(p))
		}
		seq := binary.BigEndian.Uint64(p)
		c.syncMu.Lock()
		ch := c.syncWait[seq]
		delete(c.syncWait, seq)
		c.syncMu.Unlock()
		if ch != nil {
			close(ch)
		}
	case frameGoAway:
		return &remoteCloseError{Reason: sanitizeReason(p)}
	case frameAssign, frameBound, frameDrain:
		want := frameBound
		if !c.isHub {
			want = frameAssign
		}
		if h.Type == frameDrain && !c.isHub {
			want = frameDrain
		}
		if h.Type != want || c.message == nil {
			return protoErr("unexpected %s", h.Type)
		}
		return c.message(h.Type, p)
	case frameUDPOpen, frameUDPClose:
		return c.dg.ctrlFrame(h, p)
	default:
		return protoErr("%s on the control stream", h.Type)
	}
	return nil
}

// acceptStreams serves the streams the edge opens until the connection ends.
func (c *quicConn) acceptStreams(h *streamHandler) {
	for {
		qs, err := c.qc.AcceptStream(c.ctx)
		if err != nil {
			return
		}
		if h == nil || h.serve == nil {
			qs.CancelRead(quicStreamNoAccept)
			qs.CancelWrite(quicStreamNoAccept)
			continue
		}
		c.streams.Add(1)
		c.active.Add(1)
		c.goSafe(func() { c.serveStream(h, qs) })
	}
}

// serveStream reads a new stream's OPEN and hands it to h.
func (c *quicConn) serveStream(h *streamHandler, qs *quic.Stream) {
	st := &quicStream{c: c, qs: qs}
	started := false
	defer func() {
		if !started {
			c.active.Add(-1)
			c.streams.Done()
		}
	}()
	_ = qs.SetReadDeadline(time.Now().Add(c.tuning.HandshakeTimeout))
	fr := newFrameReader(qs)
	fr.Limit = proxyproto.MaxV1Len
	fh, p, err := fr.ReadFrame()
	if err == nil && fh.Type != frameOpen {
		err = fmt.Errorf("stream starts with %s, not OPEN", fh.Type)
	}
	if err == nil {
		st.hdr, err = proxyproto.ParseV1(p)
	}
	_ = qs.SetReadDeadline(time.Time{})
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Warn("stream refused: bad OPEN", "stream", st.ID(), "err", err)
		}
		qs.CancelRead(quicStreamAborted)
		qs.CancelWrite(quicStreamAborted)
		return
	}
	started = true
	c.stats.opened.Add(1)
	st.closed = func() { h.closed(st) }
	h.opened(st)
	h.serve(c.ctx, st)
	st.served()
}

// Close implements tunnelConn.
func (c *quicConn) Close(reason string) { c.closeWith(quicCloseCode, reason) }

func (c *quicConn) closeWith(code quic.ApplicationErrorCode, reason string) {
	c.closeOnce.Do(func() {
		if len(reason) > 200 {
			reason = reason[:200]
		}
		_ = c.qc.CloseWithError(code, reason)
	})
}

// ActiveStreams implements tunnelConn.
func (c *quicConn) ActiveStreams() int { return int(c.active.Load()) }

// ConnectionState implements tunnelConn.
func (c *quicConn) ConnectionState() tls.ConnectionState { return c.qc.ConnectionState().TLS }

// PeerCaps implements tunnelConn.
func (c *quicConn) PeerCaps() uint32 { return c.peerCaps }

// Sync implements tunnelConn. Over QUIC it orders with the control stream
// only: streams opened before the peer read the PING may still arrive
// after the PONG (their own QUIC streams), which the hub's drain linger
// covers.
func (c *quicConn) Sync() <-chan struct{} {
	ch := make(chan struct{})
	c.syncMu.Lock()
	c.syncSeq++
	seq := c.syncSeq | syncBit
	c.syncWait[seq] = ch
	c.syncMu.Unlock()
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], seq)
	c.queueCtrl(0, framePing, p[:], false)
	return ch
}

// Send implements tunnelConn.
func (c *quicConn) Send(t frameType, payload []byte) { c.queueCtrl(0, t, payload, false) }

// quicStream is one stream of a quicConn: a client connection.
type quicStream struct {
	c      *quicConn
	qs     *quic.Stream
	hdr    proxyproto.Header
	closed func() // hub: the handler's closed, once the relay ends

	mu       sync.Mutex
	local    net.Conn
	aborted  bool
	attached bool
	finished bool // served without Attach: ended at serve's return; a later Attach is refused
}

// ID implements tunnelStream.
func (st *quicStream) ID() uint32 { return uint32(st.qs.StreamID()) }

// Header implements tunnelStream.
func (st *quicStream) Header() proxyproto.Header { return st.hdr }

// Attach implements tunnelStream.
func (st *quicStream) Attach(local net.Conn) {
	st.mu.Lock()
	if st.attached || st.aborted || st.finished {
		st.mu.Unlock()
		_ = local.Close()
		return
	}
	st.attached = true
	st.mu.Unlock()
	st.c.startRelay(st, local, nil)
}

// Reset implements tunnelStream. A QUIC reset carries a code, not the
// reason (the hub logs it where it refuses).
func (st *quicStream) Reset(reason string) {
	st.mu.Lock()
	st.aborted = true
	st.mu.Unlock()
	st.qs.CancelRead(quicStreamRefused)
	st.qs.CancelWrite(quicStreamRefused)
}

// served ends a hub stream that serve refused or dropped without Attach.
func (st *quicStream) served() {
	st.mu.Lock()
	attached := st.attached
	if !attached {
		st.finished = true
	}
	st.mu.Unlock()
	if !attached {
		st.qs.CancelRead(quicStreamRefused)
		st.qs.CancelWrite(quicStreamRefused)
		st.end()
	}
}

// end counts the stream out.
func (st *quicStream) end() {
	c := st.c
	c.stats.closed.Add(1)
	c.active.Add(-1)
	if st.closed != nil {
		st.closed()
	}
	if c.isHub {
		c.streams.Done()
	} else {
		c.slots.release()
	}
}

// abortLocal resets the stream both ways and its socket (the firewall's
// block, the edge's abort).
func (st *quicStream) abortLocal(reason string) {
	st.mu.Lock()
	st.aborted = true
	local := st.local
	st.mu.Unlock()
	st.qs.CancelRead(quicStreamAborted)
	st.qs.CancelWrite(quicStreamAborted)
	if local != nil {
		resetConn(local)
	}
}

// resetConn closes a socket with a reset (SO_LINGER 0) where it can.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// startRelay copies between st and local both ways, each direction ending
// with a half-close (FIN) or a reset, then closes local and ends st.
func (c *quicConn) startRelay(st *quicStream, local net.Conn, done func()) {
	st.mu.Lock()
	st.local = local
	aborted := st.aborted
	st.mu.Unlock()
	if aborted {
		resetConn(local)
	}
	if !c.isHub {
		c.active.Add(1)
	}
	upDone := make(chan struct{})
	c.goSafe(func() { defer close(upDone); c.socketToStream(st, local, &c.stats.sent) })
	c.goSafe(func() {
		c.streamToSocket(st, local, &c.stats.recv)
		<-upDone
		_ = local.Close()
		st.end()
		if done != nil {
			done()
		}
	})
}

// socketToStream copies local's bytes into the stream; EOF sends FIN, a
// read error resets the stream. It holds a buffer only while the socket has
// bytes (connReader), so an idle connection costs none.
func (c *quicConn) socketToStream(st *quicStream, local net.Conn, count *atomic.Uint64) {
	r := newConnReader(local)
	size := quicCopyBuf
	for {
		bp, n, err := r.read(size - headerLen) // the frame header's room stays unused here
		size = nextCopySize(size, n+headerLen)
		if n > 0 {
			_, werr := st.qs.Write((*bp)[headerLen : headerLen+n])
			putBuf(bp)
			if werr != nil {
				resetConn(local) // the peer reset the stream or the tunnel ended
				return
			}
			count.Add(uint64(n))
		}
		if err == io.EOF {
			_ = st.qs.Close()
			return
		}
		if err != nil {
			st.qs.CancelWrite(quicStreamAborted)
			st.qs.CancelRead(quicStreamAborted)
			if !errors.Is(err, net.ErrClosed) {
				resetConn(local)
			}
			return
		}
	}
}

// streamToSocket copies the stream's bytes to local; FIN half-closes local,
// a reset of the stream resets local. After a read that did not fill the
// buffer it gives the buffer back and waits for the next byte without one
// (Peek), so an idle stream holds no buffer.
func (c *quicConn) streamToSocket(st *quicStream, local net.Conn, count *atomic.Uint64) {
	var one [1]byte
	var bp *[]byte
	defer func() {
		if bp != nil {
			putBuf(bp)
		}
	}()
	size := quicCopyBuf
	for {
		if bp == nil {
			if _, err := st.qs.Peek(one[:]); err != nil && err != io.EOF {
				resetConn(local)
				return
			}
			bp = getBuf(size)
		}
		buf := *bp
		n, err := st.qs.Read(buf)
		if n > 0 {
			if _, werr := local.Write(buf[:n]); werr != nil {
				st.qs.CancelRead(quicStreamAborted)
				st.qs.CancelWrite(quicStreamAborted)
				resetConn(local)
				return
			}
			count.Add(uint64(n))
		}
		if err == io.EOF {
			if cw, ok := local.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			return
		}
		if err != nil {
			resetConn(local)
			return
		}
		if next := nextCopySize(len(buf), n); n < len(buf) || next != size {
			putBuf(bp) // idle for now, or another size next
			bp, size = nil, next
		}
	}
}

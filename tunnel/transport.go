package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// The transport seam. Hub and edge logic (admission, authentication, the
// allowed list, PROXY headers, dialing targets, listeners, events) runs
// above two small interfaces: tunnelConn, one authenticated tunnel
// connection, and tunnelStream, one stream of it that the peer opened. The
// handshake itself runs before either exists, over a handshakeConn (auth.go)
// of the transport. The frame mux over TLS (session, stream) is the first
// implementation; a QUIC connection, whose streams are QUIC streams, is to
// be the second, without a change above this line.
//
// Streams are handed their local socket rather than read and written like a
// net.Conn: the TLS mux reads a client's socket straight into the frame it
// writes and writes DATA payloads straight to the target's socket, with no
// goroutine pair and no copy in between (writer.go, stream.go). A transport
// whose streams are net.Conn-like (QUIC) meets the seam with a copy loop in
// each direction, which is what it would run anyway.

// tunnelConn is one authenticated tunnel connection between an edge and a hub.
type tunnelConn interface {
	// OpenStream carries local, a client connection accepted by the edge, as
	// a new stream whose OPEN holds hdr. It relays both ways in the
	// background until both directions have ended (half-closes and resets
	// pass through), then closes local and calls done (if not nil). abort
	// resets the stream at any time (the firewall's block). On error local
	// was not taken and done is not called.
	OpenStream(hdr proxyproto.Header, local net.Conn, done func()) (abort func(reason string), err error)
	// Serve runs the connection until it ends and returns why, serving the
	// streams the peer opens with h; h is nil where the peer opens none (the
	// edge), and then a stream the peer opens is reset.
	Serve(h *streamHandler) error
	// Close ends the connection and its streams, telling the peer reason.
	Close(reason string)
	// ActiveStreams counts the streams open now.
	ActiveStreams() int
	// ConnectionState is the TLS state the connection runs on.
	ConnectionState() tls.ConnectionState
	// PeerCaps is the capability bits the peer announced in the handshake.
	PeerCaps() uint32
	// Sync returns a channel closed once the peer has answered a PING
	// queued now: everything it sent before reading it has been read.
	Sync() <-chan struct{}
	// Send queues a control message for the peer, t being frameAssign (hub)
	// or frameBound (edge), and returns without waiting for the write. It is
	// lost if the connection ends first.
	Send(t frameType, payload []byte)

	// OpenFlow opens a new UDP flow described by hdr (the client, the
	// address it sent to) and returns its id; edge only, to a peer that
	// announced capUDP. Its UDP_OPEN goes out before any datagram of it.
	OpenFlow(hdr proxyproto.Header) (uint32, error)
	// SendDatagram queues one datagram (p is copied) of flow id; false when
	// it was dropped (the queue is full, the tunnel closed), never waiting.
	SendDatagram(id uint32, p []byte) bool
	// CloseFlow tells the peer that flow id has ended here.
	CloseFlow(id uint32)
	// CountDropsIn makes the connection count into c the datagrams it
	// drops of its own accord: after SendDatagram took them, or on their
	// way in (SendDatagram's refusals its caller counts). The hub calls it
	// once it knows the edge, the edge when the connection is made.
	CountDropsIn(c *atomic.Uint64)
}

// streamHandler serves the streams a peer opens (the hub's side).
type streamHandler struct {
	// opened is called for each stream as it opens, in the order the peer
	// opened them, before anything else happens to it; it must not block.
	opened func(st tunnelStream)
	// serve runs on a goroutine of its own for each stream, with a context
	// that ends with the connection: it connects the stream (Attach) or
	// refuses it (Reset).
	serve func(ctx context.Context, st tunnelStream)
	// closed is called once for each stream, when it has ended both ways.
	closed func(st tunnelStream)
	// message, if not nil, handles each ASSIGN (edge) or BOUND (hub) the
	// peer sends, in order, on the connection's reader; an error ends the
	// connection as a protocol error.
	message func(t frameType, payload []byte) error
	// flows, if not nil, takes the peer's UDP flow frames (flow.go); without
	// it they are a protocol error.
	flows *flowHandler
}

// tunnelStream is a stream the peer opened, waiting for its local end.
type tunnelStream interface {
	// ID is the stream's id on the wire.
	ID() uint32
	// Header is the PROXY header the stream was opened with.
	Header() proxyproto.Header
	// Attach hands the stream its local connection (the target, the PROXY
	// header already written); the stream relays until it has ended both
	// ways and closes local then. A stream reset meanwhile closes local at
	// once. Attach may return before the stream ends.
	Attach(local net.Conn)
	// Reset refuses or aborts the stream: the peer's side is reset, with reason.
	Reset(reason string)
}

var (
	_ tunnelConn   = (*session)(nil)
	_ tunnelStream = (*stream)(nil)
)

// OpenStream implements tunnelConn.
func (s *session) OpenStream(hdr proxyproto.Header, local net.Conn, done func()) (func(string), error) {
	st, err := s.startStream(local, hdr.AppendV1(make([]byte, 0, proxyproto.MaxV1Len)), done)
	if err != nil {
		return nil, err
	}
	return st.resetOpened, nil
}

// Serve implements tunnelConn.
func (s *session) Serve(h *streamHandler) error {
	s.hooks.open = func(st *stream, _ proxyproto.Header) { st.abort("this side accepts no streams", true) }
	if h != nil {
		s.message = h.message
		s.flows = h.flows
	}
	if h != nil && h.serve != nil {
		s.hooks.open = func(st *stream, _ proxyproto.Header) {
			h.opened(st)
			s.goSafe(func() { h.serve(s.ctx, st) })
		}
		s.hooks.closed = func(st *stream) { h.closed(st) }
	}
	return s.run()
}

// Close implements tunnelConn.
func (s *session) Close(reason string) { s.close(&localCloseError{Reason: reason}) }

// ActiveStreams implements tunnelConn.
func (s *session) ActiveStreams() int { return s.activeStreams() }

// ConnectionState implements tunnelConn; a session over a plain
// connection (tests) has the zero state.
func (s *session) ConnectionState() tls.ConnectionState {
	if tc, ok := s.conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// PeerCaps implements tunnelConn.
func (s *session) PeerCaps() uint32 { return s.peerCaps }

// Send implements tunnelConn.
func (s *session) Send(t frameType, payload []byte) { s.ctrl.message(t, payload) }

// ID implements tunnelStream.
func (st *stream) ID() uint32 { return st.id }

// Header implements tunnelStream.
func (st *stream) Header() proxyproto.Header { return st.hdr }

// Attach implements tunnelStream.
func (st *stream) Attach(local net.Conn) {
	if !st.attach(local) {
		return
	}
	st.upstream()
}

// Reset implements tunnelStream.
func (st *stream) Reset(reason string) { st.abort(reason, true) }

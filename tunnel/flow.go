package tunnel

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// UDP flows over the frame mux (PROTOCOL.md section 10). A flow is one
// client address:port to one edge port. The edge opens it on one connection
// of its set with UDP_OPEN, whose stream-id field is the flow id (ids of
// their own, per connection, increasing); both sides then send UDP_DATA,
// one datagram per frame, and either ends it with UDP_CLOSE. Order within a
// flow is TCP's: a flow stays on its connection.
//
// Datagrams never cost TCP streams their turn: they wait in a bounded
// queue per session (udpQueue) and a holder of the write lock writes at
// most udpBatchBytes of them (or one datagram) per turn; the control writer
// writes the rest when no stream writes. A datagram that finds the queue
// full is dropped and counted, and the caller never waits.

// Limits of the flow layer.
const (
	// MaxDatagram is the largest UDP payload a flow carries (65 507 bytes:
	// the most an IPv4 UDP datagram holds).
	MaxDatagram = 65507
	// udpQueueBytes and udpQueueCount bound the datagrams waiting for the
	// tunnel in one session: the memory of their buffers (a datagram frame
	// of up to 2 KiB takes 2 KiB), and their number.
	udpQueueBytes = 512 << 10
	udpQueueCount = 4096
	// udpQueueCtl bounds the UDP_OPENs and UDP_CLOSEs waiting beside them.
	udpQueueCtl = 1024
	// udpBatchBytes is what one turn at the write lock writes of the queue
	// (at least one frame).
	udpBatchBytes = 16 << 10
)

// flowOpenLen is the length of a UDP_OPEN payload for an IPv4 and an IPv6 flow.
const (
	flowOpenLen4 = 1 + 4 + 2 + 4 + 2
	flowOpenLen6 = 1 + 16 + 2 + 16 + 2
)

var errFlowQueueFull = errors.New("the tunnel's datagram queue is full")

// appendFlowOpen appends the UDP_OPEN address block of hdr: family (4 or
// 6), client IP and port, destination IP and port. Both addresses are
// written as IPv4 when both are IPv4 (or IPv4-mapped), else both as IPv6.
func appendFlowOpen(dst []byte, hdr proxyproto.Header) []byte {
	src, d := hdr.Source.Addr().Unmap(), hdr.Destination.Addr().Unmap()
	if src.Is4() && d.Is4() {
		s4, d4 := src.As4(), d.As4()
		dst = append(dst, 4)
		dst = append(dst, s4[:]...)
		dst = binary.BigEndian.AppendUint16(dst, hdr.Source.Port())
		dst = append(dst, d4[:]...)
		return binary.BigEndian.AppendUint16(dst, hdr.Destination.Port())
	}
	s16, d16 := src.As16(), d.As16()
	dst = append(dst, 6)
	dst = append(dst, s16[:]...)
	dst = binary.BigEndian.AppendUint16(dst, hdr.Source.Port())
	dst = append(dst, d16[:]...)
	return binary.BigEndian.AppendUint16(dst, hdr.Destination.Port())
}

// parseFlowOpen parses a UDP_OPEN address block. The destination port must
// not be 0 (it is the edge port the hub forwards to).
func parseFlowOpen(p []byte) (proxyproto.Header, error) {
	if len(p) == 0 {
		return proxyproto.Header{}, errors.New("empty address block")
	}
	var n int
	switch p[0] {
	case 4:
		n = 4
	case 6:
		n = 16
	default:
		return proxyproto.Header{}, errors.New("address family must be 4 or 6")
	}
	if len(p) != 1+2*(n+2) {
		return proxyproto.Header{}, errors.New("address block of the wrong length")
	}
	ip := func(b []byte) netip.Addr {
		if n == 4 {
			return netip.AddrFrom4([4]byte(b))
		}
		return netip.AddrFrom16([16]byte(b))
	}
	src := netip.AddrPortFrom(ip(p[1:1+n]), binary.BigEndian.Uint16(p[1+n:3+n]))
	q := p[3+n:]
	dst := netip.AddrPortFrom(ip(q[:n]), binary.BigEndian.Uint16(q[n:n+2]))
	if dst.Port() == 0 {
		return proxyproto.Header{}, errors.New("destination port 0")
	}
	return proxyproto.Header{Source: src, Destination: dst}, nil
}

// flowHandler takes the flow frames a peer sends on one connection. Its
// functions run on the connection's reader, in order, and must not block
// for long. p is valid only during the call.
type flowHandler struct {
	// opened is a new flow (hub); nil where the peer opens none (edge).
	opened func(id uint32, hdr proxyproto.Header)
	// data is a datagram of flow id; the flow may have ended here already
	// (the frame crossed our UDP_CLOSE), and then it is dropped.
	data func(id uint32, p []byte)
	// closed is the peer's end of flow id (also one already ended here).
	closed func(id uint32)
}

// udpEntry is one frame waiting in a udpQueue: its header and payload in
// one pooled buffer.
type udpEntry struct {
	bp   *[]byte
	data bool // UDP_DATA (counted in the byte budget); else UDP_OPEN or UDP_CLOSE
}

// udpQueue is a session's bounded queue of flow frames, in the order they
// were sent: UDP_OPEN of a flow before its UDP_DATA.
type udpQueue struct {
	mu      sync.Mutex
	q       []udpEntry // a ring would save copying; the queue is short
	head    int
	bytes   int
	data    int
	ctl     int
	pending atomic.Bool
}

// push queues the frame in bp; false (bp released) when the queue is full.
// The byte bound counts the buffers' memory, not only the datagrams'.
func (u *udpQueue) push(bp *[]byte, data bool) bool {
	u.mu.Lock()
	n := cap(*bp)
	full := data && (u.bytes+n > udpQueueBytes || u.data >= udpQueueCount) || !data && u.ctl >= udpQueueCtl
	if full {
		u.mu.Unlock()
		putBuf(bp)
		return false
	}
	if u.head > 0 && u.head == len(u.q) {
		u.q, u.head = u.q[:0], 0
	}
	u.q = append(u.q, udpEntry{bp: bp, data: data})
	if data {
		u.bytes += n
		u.data++
	} else {
		u.ctl++
	}
	u.pending.Store(true)
	u.mu.Unlock()
	return true
}

// take moves frames totalling about budget bytes (at least one) into out.
func (u *udpQueue) take(out []udpEntry, budget int) []udpEntry {
	if !u.pending.Load() {
		return out
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for u.head < len(u.q) && (budget > 0 || len(out) == 0) {
		e := u.q[u.head]
		u.q[u.head] = udpEntry{}
		u.head++
		budget -= len(*e.bp)
		if e.data {
			u.bytes -= cap(*e.bp)
			u.data--
		} else {
			u.ctl--
		}
		out = append(out, e)
	}
	if u.head == len(u.q) {
		u.q, u.head = u.q[:0], 0
		u.pending.Store(false)
	}
	return out
}

// drain releases every frame queued (the session ended).
func (u *udpQueue) drain() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := u.head; i < len(u.q); i++ {
		putBuf(u.q[i].bp)
	}
	u.q, u.head, u.bytes, u.data, u.ctl = nil, 0, 0, 0, 0
	u.pending.Store(false)
}

// queueFlowFrame queues a frame of type t for flow id with payload p, and
// wakes the control writer.
func (s *session) queueFlowFrame(t frameType, id uint32, p []byte) bool {
	if s.ctx.Err() != nil {
		return false
	}
	bp := getDatagramBuf(headerLen + len(p))
	b := *bp
	putHeader(b, frameHeader{StreamID: id, Type: t, Length: uint32(len(p))})
	copy(b[headerLen:], p)
	if !s.udp.push(bp, t == frameUDPData) {
		return false
	}
	s.ctrl.signal()
	return true
}

// writeUDPLocked writes up to udpBatchBytes of queued flow frames (at
// least one); the caller holds wlock.
func (s *session) writeUDPLocked() error {
	if !s.udp.pending.Load() {
		return nil
	}
	s.udpBatch = s.udp.take(s.udpBatch[:0], udpBatchBytes)
	var err error
	for i, e := range s.udpBatch {
		if err == nil {
			_, err = s.bw.Write(*e.bp)
		}
		putBuf(e.bp)
		s.udpBatch[i] = udpEntry{}
	}
	return err
}

// flowIDs is the edge's side of a connection's flow ids.
type flowIDs struct {
	mu   sync.Mutex
	next uint32
}

// OpenFlow implements tunnelConn.
func (s *session) OpenFlow(hdr proxyproto.Header) (uint32, error) {
	if s.isHub {
		return 0, errors.New("the hub opens no flows")
	}
	if s.peerCaps&capUDP == 0 {
		return 0, errNoUDP
	}
	var blk [flowOpenLen6]byte
	p := appendFlowOpen(blk[:0], hdr)
	// The id is taken under the queue's order: UDP_OPENs go out in id order.
	s.flowIDs.mu.Lock()
	defer s.flowIDs.mu.Unlock()
	if s.flowIDs.next == ^uint32(0) {
		return 0, errFlowIDsExhausted
	}
	id := s.flowIDs.next + 1
	if !s.queueFlowFrame(frameUDPOpen, id, p) {
		if s.ctx.Err() != nil {
			return 0, errSessionClosed
		}
		return 0, errFlowQueueFull
	}
	s.flowIDs.next = id
	s.maxFlowID.Store(id)
	return id, nil
}

var (
	errNoUDP            = errors.New("the hub does not carry UDP (protocol capability bit 3)")
	errFlowIDsExhausted = errors.New("flow ids of this connection exhausted")
)

// SendDatagram implements tunnelConn.
func (s *session) SendDatagram(id uint32, p []byte) bool {
	if len(p) > MaxDatagram {
		return false
	}
	return s.queueFlowFrame(frameUDPData, id, p)
}

// CloseFlow implements tunnelConn.
func (s *session) CloseFlow(id uint32) { s.queueFlowFrame(frameUDPClose, id, nil) }

// CountDropsIn implements tunnelConn: over TLS a datagram is dropped only
// where SendDatagram refuses it.
func (s *session) CountDropsIn(*atomic.Uint64) {}

// dispatchFlow handles UDP_OPEN, UDP_DATA and UDP_CLOSE.
func (s *session) dispatchFlow(h frameHeader) error {
	fh := s.flows
	if fh == nil || s.peerCaps&capUDP == 0 {
		return protoErr("unexpected %s: this connection carries no UDP", h.Type)
	}
	if h.StreamID == 0 {
		return protoErr("%s for flow 0", h.Type)
	}
	switch h.Type {
	case frameUDPOpen:
		if !s.isHub || fh.opened == nil {
			return protoErr("unexpected UDP_OPEN")
		}
		if h.Length > flowOpenLen6 {
			return protoErr("UDP_OPEN of %d bytes", h.Length)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		hdr, err := parseFlowOpen(p)
		if err != nil {
			return protoErr("UDP_OPEN for flow %d: %v", h.StreamID, err)
		}
		if last := s.maxFlowID.Load(); h.StreamID <= last {
			return protoErr("UDP_OPEN for flow %d, not above the last opened %d", h.StreamID, last)
		}
		s.maxFlowID.Store(h.StreamID)
		fh.opened(h.StreamID, hdr)
		return nil
	case frameUDPData:
		if h.Length > MaxDatagram {
			return protoErr("UDP_DATA of %d bytes", h.Length)
		}
		if last := s.maxFlowID.Load(); h.StreamID > last {
			return protoErr("UDP_DATA for flow %d, which was never opened", h.StreamID)
		}
		p, err := s.fr.ReadPayload(h)
		if err != nil {
			return s.readError(err)
		}
		fh.data(h.StreamID, p)
		return nil
	default: // frameUDPClose
		if h.Length != 0 {
			return protoErr("UDP_CLOSE with a payload")
		}
		if last := s.maxFlowID.Load(); h.StreamID > last {
			return protoErr("UDP_CLOSE for flow %d, which was never opened", h.StreamID)
		}
		fh.closed(h.StreamID)
		return nil
	}
}

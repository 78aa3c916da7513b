package tunnel

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// UDP flows over QUIC (PROTOCOL.md section 12.3). UDP_OPEN and UDP_CLOSE
// travel on the control stream, in order; datagrams in QUIC DATAGRAM frames
// (RFC 9221), one client datagram in one QUIC datagram when it fits:
//
//	whole:    0x00 | flow id (varint) | payload
//	fragment: 0x01 | flow id (varint) | datagram seq (varint) | index u8 | count u8 | payload
//
// A client datagram too large for one QUIC datagram goes as 2 to
// maxFragments fragments and is delivered whole once all have arrived, or
// never. QUIC datagrams may overtake the UDP_OPEN of their flow: the hub
// holds the datagrams of flows not opened yet (at most quicPendingCount,
// for quicPendingAge) and delivers them after the UDP_OPEN. A datagram of a
// flow that has ended is dropped, as on the frame mux.

// Datagram kinds, the first byte of a QUIC datagram of the tunnel.
const (
	dgWhole    = 0x00
	dgFragment = 0x01
)

// Limits of the QUIC datagram layer.
const (
	// maxFragments is the most fragments one client datagram takes.
	maxFragments = 64
	// quicPendingCount and quicPendingBytes bound the datagrams held for
	// flows whose UDP_OPEN has not arrived; quicPendingAge is how long.
	quicPendingCount = 256
	quicPendingBytes = 1 << 20
	quicPendingAge   = 2 * time.Second
	// quicPartialCount and quicPartialBytes bound the client datagrams
	// being reassembled from fragments.
	quicPartialCount = 64
	quicPartialBytes = 4 << 20
	// quicDatagramMax is the largest QUIC datagram payload tried: quic-go's
	// packets are at most 1 452 bytes, so none is larger. The sender starts
	// there and learns the path's size from quic-go's answer (a datagram
	// too large is refused at once, with the size that fits), and tries the
	// largest again quicDatagramReprobe after it learnt a smaller one: the
	// path grows as quic-go's MTU discovery finds room.
	quicDatagramMax     = 1452
	quicDatagramReprobe = time.Second
)

var errBadDatagram = errors.New("malformed datagram")

// dgramMsg is one decoded QUIC datagram of the tunnel.
type dgramMsg struct {
	kind         byte
	flow         uint32
	seq          uint64
	index, count uint8
	payload      []byte
}

// parseDatagram decodes b; payload aliases b.
func parseDatagram(b []byte) (dgramMsg, error) {
	if len(b) < 2 {
		return dgramMsg{}, errBadDatagram
	}
	m := dgramMsg{kind: b[0]}
	id, n, err := quicvarint.Parse(b[1:])
	if err != nil || id == 0 || id > 1<<32-1 {
		return dgramMsg{}, errBadDatagram
	}
	m.flow = uint32(id)
	rest := b[1+n:]
	switch m.kind {
	case dgWhole:
	case dgFragment:
		seq, n, err := quicvarint.Parse(rest)
		if err != nil || len(rest) < n+2 {
			return dgramMsg{}, errBadDatagram
		}
		m.seq, m.index, m.count = seq, rest[n], rest[n+1]
		rest = rest[n+2:]
		if m.count < 2 || m.count > maxFragments || m.index >= m.count || len(rest) == 0 {
			return dgramMsg{}, errBadDatagram
		}
	default:
		return dgramMsg{}, errBadDatagram
	}
	if len(rest) > MaxDatagram {
		return dgramMsg{}, errBadDatagram
	}
	m.payload = rest
	return m, nil
}

// appendDatagramHeader appends the header of a whole datagram (count 0)
// or of fragment index of count.
func appendDatagramHeader(b []byte, flow uint32, seq uint64, index, count int) []byte {
	if count == 0 {
		b = append(b, dgWhole)
		return quicvarint.Append(b, uint64(flow))
	}
	b = append(b, dgFragment)
	b = quicvarint.Append(b, uint64(flow))
	b = quicvarint.Append(b, seq)
	return append(b, byte(index), byte(count))
}

// queuedDgram is a client datagram waiting for the QUIC connection.
type queuedDgram struct {
	flow uint32
	bp   *[]byte
}

// pendingDgram is a datagram held for a flow not opened yet.
type pendingDgram struct {
	flow uint32
	p    []byte
	at   time.Time
}

// partialDgram is a client datagram being reassembled.
type partialDgram struct {
	seq   uint64
	count uint8
	got   uint64 // bit i: fragment i arrived
	parts [maxFragments][]byte
	size  int
	done  bool // delivered: later fragments of seq are duplicates
}

// quicDatagrams is the flow layer of one quicConn.
type quicDatagrams struct {
	c        *quicConn
	dropped  atomic.Uint64                 // what this connection dropped of its own accord
	dropsTo  atomic.Pointer[atomic.Uint64] // and where else to count it (CountDropsIn)
	nextFlow atomic.Uint32                 // edge: the last flow id given out
	maxSize  atomic.Int64                  // the largest QUIC datagram payload, as learnt
	reprobe  atomic.Int64                  // unix ns from which quicDatagramMax is tried again
	// fragmented counts the client datagrams sent in fragments.
	fragmented atomic.Uint64

	mu    sync.Mutex
	q     []queuedDgram
	bytes int
	wake  chan struct{}
	done  bool

	rmu          sync.Mutex
	maxFlowID    uint32 // hub: the last flow the edge opened
	pending      []pendingDgram
	pendingBytes int
	partial      map[uint32]*partialDgram
	partialBytes int
}

func (d *quicDatagrams) init(c *quicConn) {
	d.c = c
	d.wake = make(chan struct{}, 1)
	d.partial = make(map[uint32]*partialDgram)
	d.maxSize.Store(quicDatagramMax)
}

// OpenFlow implements tunnelConn.
func (c *quicConn) OpenFlow(hdr proxyproto.Header) (uint32, error) {
	if c.peerCaps&capUDP == 0 {
		return 0, errors.New("the hub carries no UDP")
	}
	if c.ctx.Err() != nil {
		return 0, errors.New("tunnel closed")
	}
	id := c.dg.nextFlow.Add(1)
	if id == 0 {
		return 0, errors.New("flow ids ran out")
	}
	if !c.queueCtrl(id, frameUDPOpen, appendFlowOpen(make([]byte, 0, flowOpenLen6), hdr), true) {
		return 0, errFlowQueueFull
	}
	return id, nil
}

// SendDatagram implements tunnelConn.
func (c *quicConn) SendDatagram(id uint32, p []byte) bool {
	d := &c.dg
	if len(p) > MaxDatagram {
		return false
	}
	bp := getDatagramBuf(len(p))
	copy(*bp, p)
	d.mu.Lock()
	if d.done || len(d.q) >= udpQueueCount || d.bytes+len(p) > udpQueueBytes {
		d.mu.Unlock()
		putBuf(bp)
		return false
	}
	d.q = append(d.q, queuedDgram{flow: id, bp: bp})
	d.bytes += len(p)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

// CloseFlow implements tunnelConn.
func (c *quicConn) CloseFlow(id uint32) { c.queueCtrl(id, frameUDPClose, nil, true) }

// CountDropsIn implements tunnelConn.
func (c *quicConn) CountDropsIn(n *atomic.Uint64) { c.dg.dropsTo.Store(n) }

// drop counts n datagrams this connection dropped of its own accord.
func (d *quicDatagrams) drop(n uint64) {
	d.dropped.Add(n)
	if c := d.dropsTo.Load(); c != nil {
		c.Add(n)
	}
}

// sender writes the queued datagrams into the QUIC connection until it ends.
func (d *quicDatagrams) sender() {
	var scratch []byte
	var seq uint64
	var batch []queuedDgram
	for {
		select {
		case <-d.c.ctx.Done():
			d.drain()
			return
		case <-d.wake:
		}
		d.mu.Lock()
		batch, d.q = d.q, batch[:0]
		d.bytes = 0
		d.mu.Unlock()
		for i, e := range batch {
			p := *e.bp
			if err := d.send(&scratch, &seq, e.flow, p); err != nil && d.c.ctx.Err() != nil {
				for _, rest := range batch[i:] {
					putBuf(rest.bp)
				}
				d.drain()
				return
			}
			putBuf(e.bp)
			batch[i] = queuedDgram{}
		}
	}
}

// send writes one client datagram, whole or in fragments. It waits while
// quic-go's own queue is full. When quic-go says a QUIC datagram is too
// large (the path's MTU is smaller than assumed), it learns the size and
// sends the client datagram again, in smaller pieces.
func (d *quicDatagrams) send(scratch *[]byte, seq *uint64, flow uint32, p []byte) error {
	whole := len(appendDatagramHeader((*scratch)[:0], flow, 0, 0, 0)) + len(p)
	for attempt := 0; attempt < 3; attempt++ {
		limit := int(d.maxSize.Load())
		if whole > limit && whole <= quicDatagramMax && time.Now().UnixNano() >= d.reprobe.Load() {
			limit = quicDatagramMax // the path may have grown since: try it whole
		}
		count := 0         // whole
		room := limit - 16 // a fragment's header is at most 1+5+8+2 bytes
		if whole > limit {
			count = (len(p) + room - 1) / room
		}
		if count > maxFragments {
			break
		}
		if count > 0 {
			*seq++
			d.fragmented.Add(1)
		}
		tooLarge, err := false, error(nil)
		for i := 0; i < max(count, 1) && !tooLarge && err == nil; i++ {
			part := p
			if count > 0 {
				part = p[i*room : min(len(p), (i+1)*room)]
			}
			*scratch = append(appendDatagramHeader((*scratch)[:0], flow, *seq, i, count), part...)
			tooLarge, err = d.sendOne(*scratch)
		}
		if !tooLarge {
			if err != nil {
				d.drop(1)
			}
			return err
		}
	}
	d.drop(1)
	return nil
}

// sendOne hands one QUIC datagram to quic-go; tooLarge says it did not fit
// the path, whose size is learnt for the next.
func (d *quicDatagrams) sendOne(b []byte) (tooLarge bool, err error) {
	err = d.c.qc.SendDatagram(b)
	var tl *quic.DatagramTooLargeError
	if errors.As(err, &tl) {
		d.maxSize.Store(max(tl.MaxDatagramPayloadSize, 64))
		d.reprobe.Store(time.Now().Add(quicDatagramReprobe).UnixNano())
		return true, nil
	}
	return false, err
}

// drain drops what waits to be sent, for good.
func (d *quicDatagrams) drain() {
	d.mu.Lock()
	q := d.q
	d.q, d.bytes, d.done = nil, 0, true
	d.mu.Unlock()
	for _, e := range q {
		putBuf(e.bp)
	}
}

// receiver reads the peer's datagrams until the connection ends; a
// malformed one closes the connection.
func (d *quicDatagrams) receiver() {
	for {
		b, err := d.c.qc.ReceiveDatagram(d.c.ctx)
		if err != nil {
			return
		}
		if err := d.received(b); err != nil {
			d.c.log.Warn("closing the tunnel connection", "reason", err.Error())
			d.c.closeWith(quicCloseProtocol, err.Error())
			return
		}
	}
}

// received handles one QUIC datagram of the peer.
func (d *quicDatagrams) received(b []byte) error {
	fh := d.c.flows
	if fh == nil || d.c.peerCaps&capUDP == 0 {
		return protoErr("a datagram, but this connection carries no UDP")
	}
	m, err := parseDatagram(b)
	if err != nil {
		return protoErr("%v", err)
	}
	if !d.c.isHub && m.flow > d.nextFlow.Load() {
		return protoErr("a datagram for flow %d, which was never opened", m.flow)
	}
	p := m.payload
	if m.kind == dgFragment {
		if p, err = d.reassemble(m); err != nil || p == nil {
			return err
		}
	}
	d.deliver(m.flow, p)
	return nil
}

// deliver hands a datagram to the flows, or holds it (hub) until its
// flow's UDP_OPEN arrives.
func (d *quicDatagrams) deliver(flow uint32, p []byte) {
	if d.c.isHub {
		d.rmu.Lock()
		if flow > d.maxFlowID {
			d.holdLocked(flow, p)
			d.rmu.Unlock()
			return
		}
		d.rmu.Unlock()
	}
	d.c.flows.data(flow, p)
}

// holdLocked keeps a datagram of a flow not opened yet, within bounds: the
// oldest go first, and any older than quicPendingAge.
func (d *quicDatagrams) holdLocked(flow uint32, p []byte) {
	now := time.Now()
	drop := 0
	for drop < len(d.pending) && (now.Sub(d.pending[drop].at) > quicPendingAge ||
		len(d.pending)-drop >= quicPendingCount || d.pendingBytes+len(p) > quicPendingBytes) {
		d.pendingBytes -= len(d.pending[drop].p)
		drop++
	}
	if drop > 0 {
		d.drop(uint64(drop))
		d.pending = append(d.pending[:0], d.pending[drop:]...)
	}
	if len(p) > quicPendingBytes {
		d.drop(1)
		return
	}
	d.pending = append(d.pending, pendingDgram{flow: flow, p: p, at: now})
	d.pendingBytes += len(p)
}

// reassemble adds a fragment; it returns the whole datagram once complete.
func (d *quicDatagrams) reassemble(m dgramMsg) ([]byte, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	pd := d.partial[m.flow]
	if pd != nil && pd.done && pd.seq == m.seq {
		return nil, nil // a late duplicate of a datagram delivered
	}
	if pd != nil && (pd.done || pd.seq != m.seq || pd.count != m.count) {
		if pd.seq == m.seq {
			return nil, protoErr("fragments of one datagram of flow %d disagree on their count", m.flow)
		}
		d.dropPartialLocked(m.flow, pd) // a newer datagram: the old one is lost
		pd = nil
	}
	if pd == nil {
		for len(d.partial) >= quicPartialCount || d.partialBytes+len(m.payload) > quicPartialBytes {
			if !d.dropAnyPartialLocked() {
				break
			}
		}
		pd = &partialDgram{seq: m.seq, count: m.count}
		d.partial[m.flow] = pd
	}
	bit := uint64(1) << m.index
	if pd.got&bit != 0 {
		return nil, nil // a duplicate
	}
	if pd.size+len(m.payload) > MaxDatagram {
		return nil, protoErr("fragments of flow %d add up to more than %d bytes", m.flow, MaxDatagram)
	}
	pd.got |= bit
	pd.parts[m.index] = m.payload
	pd.size += len(m.payload)
	d.partialBytes += len(m.payload)
	if pd.got != (uint64(1)<<pd.count)-1 {
		return nil, nil
	}
	out := make([]byte, 0, pd.size)
	for i := 0; i < int(pd.count); i++ {
		out = append(out, pd.parts[i]...)
	}
	d.partialBytes -= pd.size
	*pd = partialDgram{seq: pd.seq, count: pd.count, done: true}
	return out, nil
}

// dropPartialLocked forgets the datagram of flow being reassembled,
// counted as dropped unless it was delivered.
func (d *quicDatagrams) dropPartialLocked(flow uint32, pd *partialDgram) {
	d.partialBytes -= pd.size
	delete(d.partial, flow)
	if !pd.done {
		d.drop(1)
	}
}

// dropAnyPartialLocked drops one datagram being reassembled; false when
// there is none.
func (d *quicDatagrams) dropAnyPartialLocked() bool {
	for f, pd := range d.partial {
		d.dropPartialLocked(f, pd)
		return true
	}
	return false
}

// ctrlFrame handles UDP_OPEN and UDP_CLOSE from the control stream.
func (d *quicDatagrams) ctrlFrame(h frameHeader, p []byte) error {
	fh := d.c.flows
	if fh == nil || d.c.peerCaps&capUDP == 0 {
		return protoErr("unexpected %s: this connection carries no UDP", h.Type)
	}
	if h.StreamID == 0 {
		return protoErr("%s for flow 0", h.Type)
	}
	if h.Type == frameUDPOpen {
		if !d.c.isHub || fh.opened == nil {
			return protoErr("unexpected UDP_OPEN")
		}
		hdr, err := parseFlowOpen(p)
		if err != nil {
			return protoErr("UDP_OPEN for flow %d: %v", h.StreamID, err)
		}
		// Under rmu to the end: a datagram of the flow that arrives
		// meanwhile waits in deliver until the flow exists and what was
		// held for it has gone on, so it neither finds no flow nor
		// overtakes them.
		d.rmu.Lock()
		defer d.rmu.Unlock()
		if h.StreamID <= d.maxFlowID {
			return protoErr("UDP_OPEN for flow %d, not above the last opened %d", h.StreamID, d.maxFlowID)
		}
		fh.opened(h.StreamID, hdr)
		d.maxFlowID = h.StreamID
		var held [][]byte
		kept := d.pending[:0]
		for _, e := range d.pending {
			switch {
			case e.flow == h.StreamID:
				held = append(held, e.p)
				d.pendingBytes -= len(e.p)
			case e.flow < h.StreamID: // its flow was never opened: skipped ids
				d.pendingBytes -= len(e.p)
				d.drop(1)
			default:
				kept = append(kept, e)
			}
		}
		d.pending = kept
		for _, q := range held {
			fh.data(h.StreamID, q)
		}
		return nil
	}
	if len(p) != 0 {
		return protoErr("UDP_CLOSE with a payload")
	}
	last := d.nextFlow.Load()
	if d.c.isHub {
		d.rmu.Lock()
		last = d.maxFlowID
		d.rmu.Unlock()
	}
	if h.StreamID > last {
		return protoErr("UDP_CLOSE for flow %d, which was never opened", h.StreamID)
	}
	d.rmu.Lock()
	if pd := d.partial[h.StreamID]; pd != nil {
		d.partialBytes -= pd.size
		delete(d.partial, h.StreamID)
	}
	d.rmu.Unlock()
	fh.closed(h.StreamID)
	return nil
}

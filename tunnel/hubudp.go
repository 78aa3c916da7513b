package tunnel

import (
	"container/list"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// The hub's UDP flows (CONTRACT section 9). Each flow an edge opens gets a
// UDP socket of its own, connected to targetHost:<edge port>, so that the
// target's replies reach that client alone. The replies of all flows are
// read by one epoll set and goroutine of the hub (hubudppoll_linux.go) and
// sent back as UDP_DATA; where there is none, a goroutine per flow reads
// them (readReplies; it holds no read buffer while the flow is idle). Flows idle in both
// directions for UDPIdleTimeout are closed, and beyond MaxUDPFlows per edge
// the least recently used goes; both tell the edge with UDP_CLOSE.

// UDP PROXY header modes (HubConfig.UDPProxyProtocol).
const (
	// UDPProxyFirst sends, before a flow's first datagram, one datagram
	// holding only a PROXY v2 header (PROXY, INET/INET6, DGRAM).
	UDPProxyFirst = "first"
	// UDPProxyEvery puts that header in front of every datagram.
	UDPProxyEvery = "every"
	// UDPProxyNone sends the datagrams as they came.
	UDPProxyNone = "none"
)

// hubFlowKey names a flow: its connection and its id on it.
type hubFlowKey struct {
	conn tunnelConn
	id   uint32
}

// hubFlow is one flow at the hub.
type hubFlow struct {
	key   hubFlowKey
	owner *hubFlows
	hdr   proxyproto.Header
	rc    syscall.RawConn // set by the flow poller that reads it
	fd    int32
	uc    *net.UDPConn
	elem  *list.Element // in hubFlows.lru; guarded by hubFlows.mu
	last  atomic.Int64  // unix nanoseconds of the last datagram either way
	first bool          // UDPProxyFirst: the header datagram was sent; the connection's reader only
	gone  atomic.Bool
}

// hubFlows is the flows of one edge, over all its connections.
type hubFlows struct {
	h        *Hub
	edgeID   string
	counters *streamCounters
	mu       sync.Mutex
	flows    map[hubFlowKey]*hubFlow
	lru      list.List // front: most recently used
	// The datagrams of these flows the hub dropped: for the targets, that
	// their sockets could not take at once, and replies for the edge, that
	// the tunnel's queue could not take.
	droppedToTarget, droppedToEdge atomic.Uint64
	droppedInTunnel                atomic.Uint64 // by the edge's connections of their own accord (CountDropsIn)
}

func newHubFlows(h *Hub, edgeID string, c *streamCounters) *hubFlows {
	return &hubFlows{h: h, edgeID: edgeID, counters: c, flows: make(map[hubFlowKey]*hubFlow)}
}

// toTarget writes a datagram to fl's target, counting it if dropped.
func (f *hubFlows) toTarget(fl *hubFlow, p []byte) {
	if !writeDatagramNoWait(fl.uc, p) {
		f.droppedToTarget.Add(1)
	}
}

// toEdge queues a reply of fl for the edge, counting it if dropped.
func (f *hubFlows) toEdge(fl *hubFlow, p []byte) {
	if !fl.key.conn.SendDatagram(fl.key.id, p) {
		f.droppedToEdge.Add(1)
	}
}

// dropped counts the datagrams dropped both ways.
func (f *hubFlows) dropped() uint64 {
	return f.droppedToTarget.Load() + f.droppedToEdge.Load() + f.droppedInTunnel.Load()
}

// active counts the flows open now.
func (f *hubFlows) active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.flows)
}

// handler is the flowHandler of connection c.
func (f *hubFlows) handler(c tunnelConn) *flowHandler {
	return &flowHandler{
		opened: func(id uint32, hdr proxyproto.Header) { f.open(c, id, hdr) },
		data:   func(id uint32, p []byte) { f.data(c, id, p) },
		closed: func(id uint32) {
			if fl := f.remove(hubFlowKey{c, id}); fl != nil {
				f.end(fl)
			}
		},
	}
}

// open starts a flow: its socket toward the target, and its reader.
func (f *hubFlows) open(c tunnelConn, id uint32, hdr proxyproto.Header) {
	addr := net.JoinHostPort(f.h.cfg.TargetHost, strconv.Itoa(int(hdr.Destination.Port())))
	ip, err := f.h.udpTarget.resolve(f.h.cfg.TargetHost)
	var uc *net.UDPConn
	if err == nil {
		uc, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, hdr.Destination.Port())))
	}
	if err != nil {
		f.h.log.Debug("UDP target unreachable", "edgeId", f.edgeID, "flow", id, "target", addr, "err", err)
		c.CloseFlow(id)
		return
	}
	fl := &hubFlow{key: hubFlowKey{c, id}, owner: f, hdr: hdr, uc: uc}
	fl.last.Store(time.Now().UnixNano())
	var evicted *hubFlow
	f.mu.Lock()
	if len(f.flows) >= f.h.cfg.MaxUDPFlows {
		if back := f.lru.Back(); back != nil {
			evicted = back.Value.(*hubFlow)
			f.removeLocked(evicted)
		}
	}
	fl.elem = f.lru.PushFront(fl)
	f.flows[fl.key] = fl
	f.counters.flows.Add(1)
	f.mu.Unlock()
	if evicted != nil {
		evicted.key.conn.CloseFlow(evicted.key.id)
		f.end(evicted)
	}
	if !f.h.flowPoll.watch(fl) {
		f.h.wg.Add(1)
		go f.readReplies(fl)
	}
}

// data writes a datagram of the edge's client to the flow's target. It
// runs on the tunnel connection's reader, so it never waits: a datagram the
// kernel cannot take at once is dropped.
func (f *hubFlows) data(c tunnelConn, id uint32, p []byte) {
	f.mu.Lock()
	fl := f.flows[hubFlowKey{c, id}]
	if fl != nil {
		f.lru.MoveToFront(fl.elem)
	}
	f.mu.Unlock()
	if fl == nil {
		return // ended here; the frame crossed our UDP_CLOSE
	}
	fl.last.Store(time.Now().UnixNano())
	var hb [proxyproto.MaxV2Len]byte
	switch f.h.cfg.UDPProxyProtocol {
	case UDPProxyNone:
		f.toTarget(fl, p)
	case UDPProxyEvery:
		bp := getBuf(proxyproto.MaxV2Len + len(p))
		b := fl.hdr.AppendV2((*bp)[:0], proxyproto.Datagram)
		b = append(b, p...)
		f.toTarget(fl, b)
		putBuf(bp)
	default: // UDPProxyFirst
		if !fl.first {
			fl.first = true
			writeDatagramNoWait(fl.uc, fl.hdr.AppendV2(hb[:0], proxyproto.Datagram)) // a header, not a datagram of the client
		}
		f.toTarget(fl, p)
	}
}

// readReplies sends the target's datagrams back to the edge until the
// flow's socket is closed.
func (f *hubFlows) readReplies(fl *hubFlow) {
	defer f.h.wg.Done()
	var perr error
	defer func() {
		if perr != nil { // a bug: this flow ends, nothing else
			if f.remove(fl.key) != nil {
				fl.key.conn.CloseFlow(fl.key.id)
				f.end(fl)
			}
		}
	}()
	defer recoverInto(f.h.log, "a UDP flow", &perr)
	for {
		bp, n, err := readDatagramPooled(fl.uc)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || fl.gone.Load() {
				return
			}
			continue // an ICMP error of an earlier datagram: the flow goes on
		}
		if n > MaxDatagram {
			putBuf(bp)
			continue
		}
		fl.last.Store(time.Now().UnixNano())
		f.touch(fl)
		f.toEdge(fl, (*bp)[:n])
		putBuf(bp)
	}
}

// touch makes fl the most recently used flow.
func (f *hubFlows) touch(fl *hubFlow) {
	f.mu.Lock()
	if !fl.gone.Load() {
		f.lru.MoveToFront(fl.elem)
	}
	f.mu.Unlock()
}

// remove takes the flow of k out of the table; nil if it is not there.
func (f *hubFlows) remove(k hubFlowKey) *hubFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.flows[k]
	if fl != nil {
		f.removeLocked(fl)
	}
	return fl
}

func (f *hubFlows) removeLocked(fl *hubFlow) {
	delete(f.flows, fl.key)
	f.lru.Remove(fl.elem)
	fl.gone.Store(true)
	f.counters.flows.Add(-1)
}

// end closes a flow taken out of the table; its reader then returns.
func (f *hubFlows) end(fl *hubFlow) {
	f.h.flowPoll.unwatch(fl)
	_ = fl.uc.Close()
}

// dropConn ends every flow of connection c, which has ended: nothing is
// sent.
func (f *hubFlows) dropConn(c tunnelConn) {
	var gone []*hubFlow
	f.mu.Lock()
	for k, fl := range f.flows {
		if k.conn == c {
			f.removeLocked(fl)
			gone = append(gone, fl)
		}
	}
	f.mu.Unlock()
	for _, fl := range gone {
		f.end(fl)
	}
}

// expire ends the flows idle since before cutoff, telling the edge.
func (f *hubFlows) expire(cutoff int64) {
	var gone []*hubFlow
	f.mu.Lock()
	for e := f.lru.Back(); e != nil; {
		fl := e.Value.(*hubFlow)
		if fl.last.Load() >= cutoff {
			break // the list is in order of use: the rest is newer
		}
		prev := e.Prev()
		f.removeLocked(fl)
		gone = append(gone, fl)
		e = prev
	}
	f.mu.Unlock()
	for _, fl := range gone {
		fl.key.conn.CloseFlow(fl.key.id)
		f.end(fl)
	}
}

// udpSweepEvery is how often flows are checked for idleness: a quarter of
// the idle timeout, at most a second.
func udpSweepEvery(idle time.Duration) time.Duration {
	return max(min(idle/4, time.Second), 10*time.Millisecond)
}

// sweepUDP ends idle flows of every edge until the hub stops.
func (h *Hub) sweepUDP() {
	defer h.wg.Done()
	t := time.NewTicker(udpSweepEvery(h.cfg.UDPIdleTimeout))
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case now := <-t.C:
			cutoff := now.Add(-h.cfg.UDPIdleTimeout).UnixNano()
			h.mu.Lock()
			all := make([]*hubFlows, 0, len(h.edges))
			for _, e := range h.edges {
				all = append(all, e.flows)
			}
			h.mu.Unlock()
			for _, f := range all {
				f.expire(cutoff)
			}
		}
	}
}

// udpTargetTTL is how long a resolved target host name serves new flows
// before it is looked up again (in the background).
const udpTargetTTL = 30 * time.Second

// targetResolver gives the address of the hub's target host to new flows,
// which open on a tunnel connection's reader: an IP literal at once, a name
// from a cache refreshed in the background, so that a flood of new flows
// does not hold up that connection's streams with a lookup each. Only the
// first flow after the start waits for a lookup (bounded by 5 s), and after
// a failure with nothing cached the failure answers for udpTargetRetry.
type targetResolver struct {
	mu         sync.Mutex
	ip         netip.Addr
	at         time.Time
	refreshing bool
	failedAt   time.Time // the last lookup without an address failed then
	failure    error
}

// udpTargetRetry is how long a failed lookup (with no address cached) is
// the answer for new flows before one looks again.
const udpTargetRetry = 5 * time.Second

func (r *targetResolver) resolve(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	r.mu.Lock()
	if !r.ip.IsValid() && r.failure != nil && time.Since(r.failedAt) < udpTargetRetry {
		err := r.failure
		r.mu.Unlock()
		return netip.Addr{}, err
	}
	ip, at := r.ip, r.at
	stale := ip.IsValid() && time.Since(at) > udpTargetTTL && !r.refreshing
	if stale {
		r.refreshing = true
	}
	r.mu.Unlock()
	if stale {
		go func() {
			_, _ = r.lookup(host)
		}()
	}
	if ip.IsValid() {
		return ip, nil
	}
	return r.lookup(host)
}

func (r *targetResolver) lookup(host string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshing = false
	if err != nil || len(addrs) == 0 {
		if err == nil {
			err = errors.New("no address for " + host)
		}
		r.failure, r.failedAt = err, time.Now()
		return netip.Addr{}, err
	}
	r.ip, r.at, r.failure = addrs[0].Unmap(), time.Now(), nil
	return r.ip, nil
}

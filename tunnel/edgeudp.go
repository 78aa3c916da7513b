package tunnel

import (
	"container/list"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/firewall"
	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// The edge's UDP flows (CONTRACT section 9). Each UDP port has one socket
// and one reader. A datagram from a client address:port the port has no
// flow for starts one: the firewall admits it (its ticket is held until the
// flow ends), a connection of the tunnel is picked, UDP_OPEN goes out and
// then the datagram; later ones of the flow follow on that connection. The
// hub's replies are written back to the client from the port's socket.
// Flows end when idle in both directions for UDPIdleTimeout, when the flow
// cap needs room (least recently used first), when the firewall blocks the
// client, when the hub ends them, and all at once when the tunnel goes.
//
// A port removed from the assignment takes no new flows at once; its socket
// stays open for the flows it has and is closed with the last of them, or
// taken back if the port is assigned again meanwhile.

// udpSocketBuffer is the receive buffer asked for each edge UDP port.
const udpSocketBuffer = 4 << 20

// udpPort is one bound UDP port.
type udpPort struct {
	port  int
	pc    *net.UDPConn
	local netip.Addr // the address bound; the destination of its flows without pktinfo
	v6    bool       // an IPv6 socket (it may take IPv4 too)
	// pktinfo: the kernel gives each datagram's destination, which becomes
	// its flow's, and replies name it as their source (udppktinfo_linux.go).
	pktinfo bool

	// Guarded by edgeUDP.mu.
	accepting bool // in the assignment: new flows are taken
	flows     int
	closed    bool
	drops     uint64 // the kernel's drop count of the socket, as last read
}

type edgeFlowKey struct {
	client netip.AddrPort
	port   int
}

type edgeFlowRef struct {
	conn tunnelConn
	id   uint32
}

// edgeFlow is one flow at the edge.
type edgeFlow struct {
	key     edgeFlowKey
	ref     edgeFlowRef
	p       *udpPort
	srcOOB  []byte  // pktinfo: the control message that sends replies from the address the client sent to
	dest    udpDest // the client, as replies are sent to it
	ticket  *firewall.Ticket
	elem    *list.Element // in edgeUDP.lru; guarded by edgeUDP.mu
	last    atomic.Int64  // unix nanoseconds of the last datagram either way
	gone    bool          // guarded by edgeUDP.mu
	blocked atomic.Bool
}

// edgeUDP is the edge's flow table.
type edgeUDP struct {
	e        *Edge
	mu       sync.Mutex
	flows    map[edgeFlowKey]*edgeFlow
	byRef    map[edgeFlowRef]*edgeFlow
	lru      list.List             // front: most recently used
	draining map[int]*udpPort      // removed ports whose flows still live
	sockets  map[*udpPort]struct{} // every port whose socket is open
	dropped  atomic.Uint64         // datagrams the edge dropped
	kdropped uint64                // the kernel's drops at sockets closed since; guarded by mu
	noUDP    atomic.Bool           // "the hub carries no UDP" was logged
	budget   *udpBudget            // UDP's share of the tunnel while streams are busy (udpbudget.go)
}

func newEdgeUDP(e *Edge) *edgeUDP {
	return &edgeUDP{e: e, flows: make(map[edgeFlowKey]*edgeFlow), byRef: make(map[edgeFlowRef]*edgeFlow), draining: make(map[int]*udpPort),
		sockets: make(map[*udpPort]struct{}),
		budget:  newUDPBudget(func() uint64 { return e.traffic.sent.Load() + e.traffic.recv.Load() })}
}

// droppedTotal counts the client datagrams dropped: by the edge, and by the
// kernel at the ports' sockets (their receive buffers were full: the edge
// did not read fast enough, or did not read while over its budget).
func (u *edgeUDP) droppedTotal() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := u.kdropped
	for p := range u.sockets {
		u.readDropsLocked(p)
		n += p.drops
	}
	return n + u.dropped.Load()
}

// readDropsLocked updates p.drops from the kernel; u.mu is held.
func (u *edgeUDP) readDropsLocked(p *udpPort) {
	if d, ok := socketDrops(p.pc); ok && d > p.drops {
		p.drops = d
	}
}

// addSocket counts p's socket as open, for droppedTotal.
func (u *edgeUDP) addSocket(p *udpPort) {
	u.mu.Lock()
	u.sockets[p] = struct{}{}
	u.mu.Unlock()
}

// closeSocketLocked closes p's socket, keeping the count of its kernel
// drops; u.mu is held.
func (u *edgeUDP) closeSocketLocked(p *udpPort) error {
	if _, ok := u.sockets[p]; ok {
		u.readDropsLocked(p)
		u.kdropped += p.drops
		delete(u.sockets, p)
	}
	return p.pc.Close()
}

// closeSocket is closeSocketLocked for a caller without u.mu.
func (u *edgeUDP) closeSocket(p *udpPort) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closeSocketLocked(p)
}

func (u *edgeUDP) active() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.flows)
}

// takeBack returns the socket of a removed port that still serves flows,
// accepting again; nil if there is none. e.mu is held.
func (u *edgeUDP) takeBack(port int) *udpPort {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.draining[port]
	if p != nil {
		delete(u.draining, port)
		p.accepting = true
	}
	return p
}

// retire stops p taking new flows; it is closed now if it has none, else
// with its last flow. e.mu is held.
func (u *edgeUDP) retire(p *udpPort) {
	u.mu.Lock()
	defer u.mu.Unlock()
	p.accepting = false
	if p.flows == 0 {
		p.closed = true
		_ = u.closeSocketLocked(p)
		return
	}
	u.draining[p.port] = p
}

// closeDraining closes the sockets of removed ports (the edge stops).
func (u *edgeUDP) closeDraining() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for port, p := range u.draining {
		p.closed = true
		_ = u.closeSocketLocked(p)
		delete(u.draining, port)
	}
}

// readLoop reads the datagrams of p until its socket is closed.
func (u *edgeUDP) readLoop(p *udpPort) {
	defer u.e.wg.Done()
	r := newPortReader(p.pc, p.pktinfo)
	var pause *time.Timer
	for {
		n, err := r.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			u.e.log.Warn("UDP socket failed", "port", p.port, "err", err)
			return
		}
		var wait time.Duration
		for i := 0; i < n; i++ {
			b, from, oob := r.msg(i)
			if len(b) > MaxDatagram {
				u.dropped.Add(1)
				continue
			}
			u.safeDatagram(p, from, b, oob)
			wait = max(wait, u.budget.charge(len(b)))
		}
		// Over UDP's budget (streams busy): no more reads for a while; the
		// socket's buffer holds what comes meanwhile, the kernel drops the
		// rest, and droppedTotal counts it.
		if wait > 0 {
			if pause == nil {
				pause = time.NewTimer(wait)
			} else {
				pause.Reset(wait)
			}
			select {
			case <-pause.C:
			case <-u.e.ctx.Done():
				pause.Stop()
				return
			}
		}
	}
}

func (u *edgeUDP) safeDatagram(p *udpPort, from netip.AddrPort, b, oob []byte) {
	var err error
	defer recoverInto(u.e.log, "a UDP datagram", &err)
	u.datagram(p, from, b, oob)
}

// datagram carries one client datagram: on its flow, or on a new one. oob
// is its control messages (pktinfo).
func (u *edgeUDP) datagram(p *udpPort, from netip.AddrPort, b, oob []byte) {
	now := time.Now().UnixNano()
	key := edgeFlowKey{client: from, port: p.port}
	u.mu.Lock()
	fl := u.flows[key]
	if fl != nil {
		u.lru.MoveToFront(fl.elem)
		u.mu.Unlock()
		fl.last.Store(now)
		if !fl.ref.conn.SendDatagram(fl.ref.id, b) {
			u.dropped.Add(1)
		}
		return
	}
	accepting := p.accepting
	u.mu.Unlock()
	if !accepting {
		u.dropped.Add(1)
		return
	}
	t := u.e.pickTunnel()
	if t == nil {
		u.dropped.Add(1)
		return
	}
	conn := t.pick()
	if conn.PeerCaps()&capUDP == 0 {
		u.dropped.Add(1)
		if !u.noUDP.Swap(true) {
			u.e.log.Warn("dropping UDP datagrams: " + errNoUDP.Error())
		}
		return
	}
	fl = &edgeFlow{key: key, p: p, dest: sockaddrOf(from, p.v6)}
	fl.last.Store(now)
	// onBlock runs in the goroutine of the firewall's update, outside its
	// locks (firewall.Update), so it may end the flow there.
	ticket, ok := u.e.firewall.admit(net.UDPAddrFromAddrPort(from), func() {
		fl.blocked.Store(true)
		u.closeLocal(fl)
	})
	if !ok {
		return // counted in firewallRefused
	}
	fl.ticket = ticket
	client := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	local := p.local
	if p.pktinfo {
		if d := parsePktinfo(oob); d.IsValid() {
			local = d
			fl.srcOOB = appendPktinfoSrc(nil, d, p.v6)
		}
	}
	id, err := conn.OpenFlow(proxyproto.Header{Source: client, Destination: netip.AddrPortFrom(local, uint16(p.port))})
	if err != nil {
		ticket.Release()
		u.dropped.Add(1)
		return
	}
	fl.ref = edgeFlowRef{conn: conn, id: id}
	var evicted *edgeFlow
	u.mu.Lock()
	if len(u.flows) >= u.e.cfg.MaxUDPFlows {
		if back := u.lru.Back(); back != nil {
			evicted = back.Value.(*edgeFlow)
			u.removeLocked(evicted)
		}
	}
	fl.elem = u.lru.PushFront(fl)
	u.flows[key] = fl
	u.byRef[fl.ref] = fl
	p.flows++
	u.e.traffic.flows.Add(1)
	u.mu.Unlock()
	if evicted != nil {
		u.finish(evicted, true)
	}
	// The tunnel may have ended meanwhile, its flows dropped before this one
	// was in the table: then it goes too, and the next datagram opens a flow
	// on the new tunnel. (The tunnel is cleared before its flows are dropped.)
	if !u.e.tunnelLive(t) {
		u.mu.Lock()
		gone := fl.gone
		if !gone {
			u.removeLocked(fl)
		}
		u.mu.Unlock()
		if !gone {
			u.finish(fl, false)
		}
		u.dropped.Add(1)
		return
	}
	if !conn.SendDatagram(id, b) {
		u.dropped.Add(1)
	}
	if fl.blocked.Load() {
		u.closeLocal(fl)
	}
}

// removeLocked takes fl out of the table; u.mu is held. Its ticket and port
// are released by finish.
func (u *edgeUDP) removeLocked(fl *edgeFlow) {
	fl.gone = true
	delete(u.flows, fl.key)
	delete(u.byRef, fl.ref)
	u.lru.Remove(fl.elem)
	u.e.traffic.flows.Add(-1)
}

// finish releases what a removed flow held, telling the hub if tell.
func (u *edgeUDP) finish(fl *edgeFlow, tell bool) {
	if tell {
		fl.ref.conn.CloseFlow(fl.ref.id)
	}
	fl.ticket.Release()
	u.mu.Lock()
	p := fl.p
	p.flows--
	if p.flows == 0 && !p.accepting && !p.closed {
		p.closed = true
		_ = u.closeSocketLocked(p)
		if u.draining[p.port] == p {
			delete(u.draining, p.port)
		}
	}
	u.mu.Unlock()
}

// closeLocal ends fl here and tells the hub (a block, a bug).
func (u *edgeUDP) closeLocal(fl *edgeFlow) {
	u.mu.Lock()
	if fl.gone || fl.elem == nil {
		u.mu.Unlock()
		return
	}
	u.removeLocked(fl)
	u.mu.Unlock()
	u.finish(fl, true)
}

// handler is the flowHandler of connection c: the hub's replies and ends.
func (u *edgeUDP) handler(c tunnelConn) *flowHandler {
	return &flowHandler{
		data: func(id uint32, b []byte) {
			u.mu.Lock()
			fl := u.byRef[edgeFlowRef{c, id}]
			if fl != nil {
				u.lru.MoveToFront(fl.elem)
			}
			u.mu.Unlock()
			if fl == nil {
				return // ended here: the frame crossed our UDP_CLOSE
			}
			fl.last.Store(time.Now().UnixNano())
			sendToNoWait(fl.p.pc, b, fl.srcOOB, fl.dest) // a client that cannot take it now loses it
		},
		closed: func(id uint32) {
			u.mu.Lock()
			fl := u.byRef[edgeFlowRef{c, id}]
			if fl != nil {
				u.removeLocked(fl)
			}
			u.mu.Unlock()
			if fl != nil {
				u.finish(fl, false)
			}
		},
	}
}

// dropTunnel ends every flow of the tunnel t, which has ended.
func (u *edgeUDP) dropTunnel(t *edgeConns) {
	var gone []*edgeFlow
	u.mu.Lock()
	for _, fl := range u.flows {
		for _, c := range t.conns {
			if fl.ref.conn == c {
				u.removeLocked(fl)
				gone = append(gone, fl)
				break
			}
		}
	}
	u.mu.Unlock()
	for _, fl := range gone {
		u.finish(fl, false)
	}
}

// sweep ends idle flows until the edge stops.
func (u *edgeUDP) sweep() {
	defer u.e.wg.Done()
	idle := u.e.cfg.UDPIdleTimeout
	t := time.NewTicker(udpSweepEvery(idle))
	defer t.Stop()
	for {
		select {
		case <-u.e.ctx.Done():
			return
		case now := <-t.C:
			cutoff := now.Add(-idle).UnixNano()
			var gone []*edgeFlow
			u.mu.Lock()
			for e := u.lru.Back(); e != nil; {
				fl := e.Value.(*edgeFlow)
				if fl.last.Load() >= cutoff {
					break
				}
				prev := e.Prev()
				u.removeLocked(fl)
				gone = append(gone, fl)
				e = prev
			}
			u.mu.Unlock()
			for _, fl := range gone {
				u.finish(fl, true)
			}
		}
	}
}

package tunnel

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	"github.com/hashicorp/go-multierror"
)

// The edge's listening sockets. The ports come from the edge's own config
// (startEdge) until the hub assigns others (assign.go); a new assignment
// takes effect without touching the tunnel: an added port is bound, a
// removed one stops accepting while the connections it accepted run to
// their end, an unchanged one is left alone.

// edgePorts holds the edge's listeners by port; guarded by Edge.mu.
type edgePorts struct {
	tcp map[int]net.Listener
	udp map[int]*udpPort
}

func newEdgePorts() edgePorts {
	return edgePorts{tcp: make(map[int]net.Listener), udp: make(map[int]*udpPort)}
}

// boundLocked is the ports bound now, sorted; e.mu is held.
func (e *Edge) boundLocked() portLists {
	return portLists{TCP: nonNil(slices.Sorted(maps.Keys(e.ports.tcp))), UDP: nonNil(slices.Sorted(maps.Keys(e.ports.udp)))}
}

// bindTCPLocked binds TCP port p on the listen host and starts accepting
// on it; e.mu is held.
func (e *Edge) bindTCPLocked(p int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(e.cfg.ListenHost, strconv.Itoa(p)))
	if err != nil {
		return unwrapOpError(err)
	}
	e.ports.tcp[p] = ln
	e.wg.Add(1)
	go e.acceptLoop(ln)
	return nil
}

// bindUDPLocked binds UDP port p on the listen host, or takes back the
// socket of p that still serves the flows of an earlier assignment, and
// starts carrying its flows (edgeudp.go); e.mu is held.
func (e *Edge) bindUDPLocked(p int) error {
	if up := e.udp.takeBack(p); up != nil {
		e.ports.udp[p] = up
		return nil
	}
	pc, err := net.ListenPacket("udp", net.JoinHostPort(e.cfg.ListenHost, strconv.Itoa(p)))
	if err != nil {
		return unwrapOpError(err)
	}
	uc := pc.(*net.UDPConn)
	_ = uc.SetReadBuffer(udpSocketBuffer) // room for bursts; the kernel caps it at rmem_max
	up := &udpPort{port: p, pc: uc, local: uc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), accepting: true}
	up.v6 = uc.LocalAddr().(*net.UDPAddr).IP.To4() == nil
	if v6, ok := enablePktinfo(uc); ok {
		up.v6, up.pktinfo = v6, true
	}
	e.ports.udp[p] = up
	e.udp.addSocket(up)
	e.wg.Add(1)
	go e.udp.readLoop(up)
	return nil
}

// setPortsLocked makes the bound ports those of want: it closes the
// listeners of ports no longer wanted and binds the new ones, leaving the
// others alone. A port that cannot be bound is left out and reported; e.mu
// is held. Once the listeners are closed for good (Shutdown, Close) it does
// nothing.
func (e *Edge) setPortsLocked(want portLists) []PortErrorEvent {
	if e.lnClosed {
		return nil
	}
	for p, ln := range e.ports.tcp {
		if !slices.Contains(want.TCP, p) {
			_ = ln.Close()
			delete(e.ports.tcp, p)
		}
	}
	for p, up := range e.ports.udp {
		if !slices.Contains(want.UDP, p) {
			e.udp.retire(up) // its flows live on until they end
			delete(e.ports.udp, p)
		}
	}
	var errs []PortErrorEvent
	for _, p := range want.TCP {
		if _, ok := e.ports.tcp[p]; !ok {
			if err := e.bindTCPLocked(p); err != nil {
				errs = append(errs, PortErrorEvent{Port: p, Protocol: "tcp", Error: fmt.Sprintf("cannot listen on TCP port %d: %v", p, err)})
			}
		}
	}
	for _, p := range want.UDP {
		if _, ok := e.ports.udp[p]; !ok {
			if err := e.bindUDPLocked(p); err != nil {
				errs = append(errs, PortErrorEvent{Port: p, Protocol: "udp", Error: fmt.Sprintf("cannot listen on UDP port %d: %v", p, err)})
			}
		}
	}
	e.portsOK = len(errs) == 0
	return errs
}

// closePortsLocked closes every listening socket once; e.mu is held.
func (e *Edge) closePortsLocked() error {
	if e.lnClosed {
		return nil
	}
	e.lnClosed = true
	var errs error
	for p, ln := range e.ports.tcp {
		if err := ln.Close(); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("closing listener on port %d: %w", p, err))
		}
	}
	for p, up := range e.ports.udp {
		if err := e.udp.closeSocket(up); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("closing UDP socket on port %d: %w", p, err))
		}
	}
	e.udp.closeDraining()
	return errs
}

// applyAssign makes m the edge's assignment: its ports (the edge's own when
// m has none) and its firewall. It reports each port it cannot bind
// (portError) and then the assignment (portsAssigned) when received says
// the hub sent it, and returns what is bound now, for BOUND.
func (e *Edge) applyAssign(m assignMsg, received bool) boundMsg {
	bound, report := e.applyAssignLater(m, received)
	report()
	return bound
}

// applyAssignLater is applyAssign that leaves the events and logs to the
// function it returns.
func (e *Edge) applyAssignLater(m assignMsg, received bool) (boundMsg, func()) {
	want := e.own
	if m.Ports != nil {
		want = *m.Ports
	}
	e.mu.Lock()
	errs := e.setPortsLocked(want)
	bound := e.boundLocked()
	e.mu.Unlock()
	e.firewall.apply(m.Firewall, bound)
	return boundMsg{Seq: m.Seq, portLists: bound}, func() {
		for _, pe := range errs {
			e.log.Warn("port not bound", "port", pe.Port, "protocol", pe.Protocol, "err", pe.Error)
			e.emit(EventPortError, pe)
		}
		if len(want.TCP) == 0 && len(want.UDP) == 0 {
			e.log.Warn("no ports to listen on: neither the hub nor the edge's config gives any")
		}
		if received {
			e.log.Info("ports assigned", "listenPorts", want.TCP, "listenPortsUdp", want.UDP, "boundTcp", bound.TCP, "boundUdp", bound.UDP)
			e.emit(EventPortsAssigned, PortsAssignedEvent{ListenPorts: nonNil(want.TCP), ListenPortsUDP: nonNil(want.UDP)})
		}
	}
}

// takeAssignments applies the hub's first assignment of a new tunnel (or,
// from a hub that assigns nothing, the edge's own ports), tells the hub
// what is bound, and returns the handler of the assignments that follow on
// the tunnel's connection of index 0 (nil from a hub that assigns nothing),
// and the reporting of the first assignment (portError, portsAssigned), for
// the caller to run once the tunnel serves clients: a client that connects
// on the word of portsAssigned finds the tunnel there.
func (e *Edge) takeAssignments(t *edgeConns, first *assignMsg) (func(frameType, []byte) error, func()) {
	if first == nil {
		_, report := e.applyAssignLater(assignMsg{}, false)
		return nil, report
	}
	conn := t.conns[0]
	bound, report := e.applyAssignLater(*first, true)
	conn.Send(frameBound, encodeBound(bound))
	last := first.Seq
	return func(_ frameType, p []byte) error {
		m, err := parseAssign(p)
		if err != nil {
			return err
		}
		if m.Seq <= last {
			return nil // sent twice, as the hub may around a change of its list
		}
		last = m.Seq
		conn.Send(frameBound, encodeBound(e.applyAssign(m, true)))
		return nil
	}, report
}

// readFirstAssign reads the ASSIGN a hub that assigns sends right after
// AUTH_OK, or the GOAWAY that refuses the edge instead.
func readFirstAssign(conn handshakeConn) (assignMsg, error) {
	fr := newFrameReader(conn)
	fr.Limit = maxAssignLen
	h, p, err := fr.ReadFrame()
	if err != nil {
		return assignMsg{}, fmt.Errorf("reading the hub's assignment: %w", err)
	}
	switch {
	case h.Type == frameGoAway:
		return assignMsg{}, &remoteCloseError{Reason: sanitizeReason(p)}
	case h.Type != frameAssign || h.StreamID != 0:
		return assignMsg{}, fmt.Errorf("%w: got %s on stream %d, want ASSIGN", errBadHandshake, h.Type, h.StreamID)
	}
	return parseAssign(p)
}

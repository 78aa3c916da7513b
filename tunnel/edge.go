package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/internal/backoff"
	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
	"github.com/serve-zone/remoteingress/tunnel/stun"
)

// stunRetryMin is the first delay before STUN is asked again after a failure.
const stunRetryMin = 5 * time.Second

// Edge listens on public ports and carries each connection over the tunnel.
type Edge struct {
	cfg    EdgeConfig
	log    *slog.Logger
	own    portLists  // the ports of cfg, used while the hub assigns none
	links  []*hubLink // one per hub address (edgehubs.go); the slice never changes
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Counters of Metrics (metrics.go).
	traffic    streamCounters
	reconnects atomic.Uint64
	pickNext   atomic.Uint32 // pickTunnel's turn among equal hubs
	firewall   *edgeFirewall
	udp        *edgeUDP // the UDP flows (edgeudp.go)

	mu       sync.Mutex
	ports    edgePorts // the listening sockets (edgeports.go)
	portsOK  bool      // every port of the current assignment is bound
	lnClosed bool      // the listeners are closed for good (Shutdown or Close)
	publicIP string
	closed   bool
}

// StartEdge validates cfg, binds every listen port (or none) and starts the
// tunnel and STUN loops in the background. An unreachable hub is not an error.
func StartEdge(cfg EdgeConfig) (*Edge, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Edge{cfg: cfg, log: cfg.Logger.With("side", "edge", "edgeId", cfg.EdgeID),
		own: portLists{TCP: nonNil(cfg.ListenPorts), UDP: nonNil(cfg.ListenPortsUDP)}, ports: newEdgePorts()}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	var names []string // the entries that are names, resolved again from time to time
	for _, entry := range cfg.HubAddrs() {
		addrs, name, _ := resolveHub(e.ctx, entry, cfg.lookupHost())
		if host, _, err := net.SplitHostPort(entry); err == nil && net.ParseIP(host) == nil {
			names = append(names, entry)
		}
		for _, a := range addrs {
			if slices.ContainsFunc(e.links, func(l *hubLink) bool { return l.addr == a }) {
				continue
			}
			l, err := e.newLink(entry, a, name)
			if err != nil {
				e.cancel()
				return nil, err
			}
			e.links = append(e.links, l)
		}
	}
	e.firewall = newEdgeFirewall(cfg, e.log)
	e.udp = newEdgeUDP(e)
	e.mu.Lock()
	errs := e.setPortsLocked(e.own)
	if len(errs) > 0 {
		_ = e.closePortsLocked()
		e.mu.Unlock()
		e.cancel()
		e.wg.Wait()
		return nil, errors.New(errs[0].Error)
	}
	e.mu.Unlock()
	if len(e.own.TCP) == 0 && len(e.own.UDP) == 0 {
		e.log.Info("no listen ports given: waiting for the hub to assign them")
	}
	e.mu.Lock() // the loops and refreshLoop change e.links
	if cfg.HubMode == HubFailover {
		e.wg.Add(1)
		go e.failoverLoop()
	} else {
		for _, l := range e.links {
			e.wg.Add(1)
			go e.spreadLoop(l)
		}
	}
	if len(names) > 0 {
		e.wg.Add(1)
		go e.refreshLoop(names)
	}
	e.wg.Add(1)
	go e.udp.sweep()
	e.mu.Unlock()
	if cfg.StunInterval > 0 { // negative disables STUN
		e.wg.Add(1)
		go e.stunLoop()
	}
	e.log.Info("edge started", "listenPorts", e.own.TCP, "listenPortsUdp", e.own.UDP, "hubs", e.hubNames(), "hubMode", cfg.HubMode)
	return e, nil
}

// Status reports the edge's state.
func (e *Edge) Status() EdgeStatus {
	refused := e.firewall.refused() // may ask the kernel: not under e.mu
	e.mu.Lock()
	defer e.mu.Unlock()
	bound := e.boundLocked()
	st := EdgeStatus{Running: !e.closed, Connected: e.anyUpLocked(), ListenPorts: bound.TCP, ListenPortsUDP: bound.UDP,
		FirewallRefused: refused, Hubs: e.hubsStatusLocked()}
	for _, l := range e.links {
		if l.tunnel != nil {
			st.ActiveStreams += l.tunnel.activeStreams()
			st.Connections += len(l.tunnel.conns)
			if st.Transport == nil {
				tr := l.tunnel.transport
				st.Transport = &tr
			}
		}
		st.ReconnectAttempts = max(st.ReconnectAttempts, l.attempts)
	}
	if !st.Connected {
		st.LastError = e.lastErrorLocked()
	}
	if e.publicIP != "" {
		ip := e.publicIP
		st.PublicIP = &ip
	}
	st.ActiveUDPFlows = e.udp.active()
	st.UDPDatagramsDropped = e.udp.droppedTotal()
	return st
}

// LastError is why the last connection attempt or tunnel failed ("" if none
// or while a tunnel is up); with several hubs, that of the first hub down.
func (e *Edge) LastError() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.anyUpLocked() {
		return ""
	}
	return e.lastErrorLocked()
}

// lastErrorLocked is the last error of the first link that has one; e.mu is held.
func (e *Edge) lastErrorLocked() string {
	for _, l := range e.links {
		if l.lastError != "" {
			return l.lastError
		}
	}
	return ""
}

// hubNames is the hub addresses, for logs.
func (e *Edge) hubNames() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.links))
	for i, l := range e.links {
		out[i] = l.addr
	}
	return out
}

// Close stops the listeners, the tunnel and every stream, and waits for them.
func (e *Edge) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.cancel()
	var tunnels []*edgeConns
	for _, l := range e.links {
		if l.tunnel != nil {
			tunnels = append(tunnels, l.tunnel)
		}
	}
	errs := e.closeListenersLocked()
	e.mu.Unlock()
	for _, t := range tunnels {
		t.close("edge stopping")
	}
	e.wg.Wait()
	e.firewall.close()
	e.log.Info("edge stopped")
	return errs
}

// closeListenersLocked closes the listening sockets once; e.mu is held.
func (e *Edge) closeListenersLocked() error { return e.closePortsLocked() }

// Shutdown stops the edge gracefully, in the manner of http.Server.Shutdown:
// it closes the listeners at once (new clients are refused by the kernel),
// lets the streams already open run until none is left or ctx ends, then
// closes everything (Close). It returns ctx's error when streams were still
// open at the end.
func (e *Edge) Shutdown(ctx context.Context) error {
	return drain(ctx, e.log, "edge", func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.closed {
			return nil
		}
		return e.closeListenersLocked()
	}, e.activeStreams, e.Close)
}

// activeStreams counts the streams of every tunnel (0 while disconnected).
func (e *Edge) activeStreams() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, l := range e.links {
		if l.tunnel != nil {
			n += l.tunnel.activeStreams()
		}
	}
	return n
}

func (e *Edge) emit(name string, data any) {
	if e.cfg.Events != nil {
		e.cfg.Events(Event{Name: name, Data: data})
	}
}

func (e *Edge) acceptLoop(ln net.Listener) {
	defer e.wg.Done()
	acceptConns(e.ctx, ln, e.log, e.handleClient)
}

// handleClient opens a stream for a client, or closes the connection at once
// when there is no tunnel.
func (e *Edge) handleClient(conn net.Conn) {
	var err error
	defer func() {
		if err != nil {
			_ = conn.Close()
		}
	}()
	defer recoverInto(e.log, "accepting a client", &err)
	client := &edgeClient{}
	ticket, ok := e.firewall.admit(conn.RemoteAddr(), client.block)
	if !ok {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = conn.Close()
		return
	}
	tunnel := e.pickTunnel()
	if tunnel == nil {
		ticket.Release()
		e.log.Debug("no tunnel, closing client connection", "client", conn.RemoteAddr().String())
		_ = conn.Close()
		return
	}
	hdr, err := proxyproto.HeaderFor(conn.RemoteAddr(), conn.LocalAddr())
	if err != nil {
		ticket.Release()
		e.log.Warn("cannot describe client connection", "err", err)
		_ = conn.Close()
		return
	}
	abort, err := tunnel.pick().OpenStream(hdr, conn, ticket.Release)
	if err != nil {
		ticket.Release()
		if errors.Is(err, errTooManyStreams) {
			e.log.Warn("refusing client: stream limit reached", "limit", e.cfg.MaxStreams)
		}
		_ = conn.Close()
		return
	}
	client.opened(abort)
}

func (e *Edge) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.ctx.Done():
		return false
	}
}

// connectSet connects a new set of cfg.Connections tunnel connections: the
// first one decides (its failure is the set's), the others are added at
// once beside each other; one of them that fails is left out, with a warning.
func (e *Edge) connectSet(l *hubLink) (*edgeConns, *assignMsg, error) {
	n := e.cfg.Connections
	set := setPlace{ID: newSetID(), Size: uint8(n)}
	slots := newStreamSlots(e.cfg.MaxStreams) // the limit is the edge's, over all its connections
	assigned := make(chan assignMsg, 1)
	first, transport, err := e.connectFirst(l, set, slots, assigned)
	if err != nil {
		return nil, nil, err
	}
	var assign *assignMsg
	select {
	case m := <-assigned:
		assign = &m
	default: // the hub does not assign
	}
	conns := make([]tunnelConn, n)
	conns[0] = first
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := set
			one.Index = uint8(i)
			c, err := e.connectWith(transport, l, one, slots, nil)
			if err != nil {
				if e.ctx.Err() == nil {
					e.log.Warn("extra tunnel connection failed; running with fewer", "index", i, "reason", err.Error())
				}
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	t := &edgeConns{transport: transport}
	for _, c := range conns {
		if c != nil {
			t.conns = append(t.conns, c)
		}
	}
	return t, assign, nil
}

// connectFirst connects the first connection of a set by the configured
// transport and returns the transport it got: TransportAuto tries QUIC for
// QUICFallback and then TLS, when the QUIC handshake did not complete (an
// answer from the hub that refuses the edge is final).
func (e *Edge) connectFirst(l *hubLink, set setPlace, slots *streamSlots, first chan<- assignMsg) (tunnelConn, string, error) {
	switch e.cfg.Transport {
	case TransportQUIC:
		c, err := e.connectQUIC(l, set, slots, first, e.cfg.HandshakeTimeout)
		return c, TransportQUIC, err
	case TransportAuto:
		c, err := e.connectQUIC(l, set, slots, first, e.cfg.QUICFallback)
		var qe *errQUICHandshake
		if err == nil || !errors.As(err, &qe) || e.ctx.Err() != nil {
			return c, TransportQUIC, err
		}
		e.log.Info("QUIC did not connect; using TLS until the next reconnect", "hub", l.addr, "reason", err.Error())
	}
	c, err := e.connectTLS(l, set, slots, first)
	return c, TransportTLS, err
}

// connectWith connects one more connection of a set by transport.
func (e *Edge) connectWith(transport string, l *hubLink, set setPlace, slots *streamSlots, first chan<- assignMsg) (tunnelConn, error) {
	if transport == TransportQUIC {
		return e.connectQUIC(l, set, slots, first, e.cfg.HandshakeTimeout)
	}
	return e.connectTLS(l, set, slots, first)
}

// connectTLS dials the hub, runs TLS and the mutual authentication under one
// deadline, and returns the frame mux over that connection, ready to serve:
// connection set.Index of set, counting its streams in slots.
// On the first connection of a set, the hub's first assignment is read as
// part of the handshake and sent to first (which has room for it).
func (e *Edge) connectTLS(l *hubLink, set setPlace, slots *streamSlots, first chan<- assignMsg) (conn tunnelConn, err error) {
	defer recoverInto(e.log, "connecting to the hub", &err)
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.HandshakeTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", l.addr)
	if err != nil {
		return nil, unwrapOpError(err)
	}
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	tc := tls.Client(raw, l.tlsConf)
	err = tc.HandshakeContext(ctx)
	var peer peerParams
	if err == nil {
		peer, err = edgeHandshake(tc, e.cfg.EdgeID, e.cfg.Secret, e.cfg.Window, set, ourCaps)
	}
	if !stop() || err != nil {
		_ = raw.Close()
		if err == nil || ctx.Err() != nil {
			err = fmt.Errorf("handshake timed out after %s", e.cfg.HandshakeTimeout)
		}
		return nil, err
	}
	if peer.window < minWindow || peer.window > maxWindow {
		_ = raw.Close()
		return nil, fmt.Errorf("hub announced a window of %d bytes (allowed %d-%d)", peer.window, minWindow, maxWindow)
	}
	if set.Index == 0 && peer.caps&capAssign != 0 {
		m, err := readFirstAssign(tc)
		if err != nil {
			_ = raw.Close()
			return nil, err
		}
		first <- m
	}
	_ = raw.SetDeadline(time.Time{})
	sess := newSession(tc, false, e.cfg.Tuning, peer, e.log, sessionHooks{})
	sess.setIDs(set)
	sess.shareSlots(slots)
	sess.countInto(&e.traffic)
	return sess, nil
}

// stunLoop asks the STUN server for the edge's public address every
// interval; failures are logged and retried sooner, never fatal.
func (e *Edge) stunLoop() {
	defer e.wg.Done()
	retry := backoff.Exponential{Min: stunRetryMin, Max: e.cfg.StunInterval}
	failures := 0
	for {
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
		ap, err := stun.Discover(ctx, e.cfg.StunServer)
		cancel()
		if e.ctx.Err() != nil {
			return
		}
		wait := e.cfg.StunInterval
		if err != nil {
			e.log.Warn("STUN discovery failed", "server", e.cfg.StunServer, "err", err.Error())
			wait = retry.Delay(failures)
			failures++
		} else {
			if failures > 0 {
				e.log.Info("STUN discovery works again", "server", e.cfg.StunServer)
			}
			failures = 0
			e.setPublicIP(ap.Addr())
		}
		if !e.sleep(wait) {
			return
		}
	}
}

func (e *Edge) setPublicIP(a netip.Addr) {
	ip := a.Unmap().String()
	e.mu.Lock()
	changed := e.publicIP != ip
	e.publicIP = ip
	e.mu.Unlock()
	if changed {
		e.log.Info("public IP discovered", "ip", ip)
		e.emit(EventPublicIPDiscovered, PublicIPEvent{IP: ip})
	}
}

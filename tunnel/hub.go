package tunnel

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/serve-zone/remoteingress/internal/ratelog"
)

// Hub accepts edge tunnels and forwards their streams to the target host.
type Hub struct {
	cfg         HubConfig
	log         *slog.Logger
	ln          net.Listener
	quic        *quicListener // nil with DisableQUIC (quichub.go)
	tlsConf     *tls.Config
	fingerprint string
	port        int
	ctx         context.Context
	cancel      context.CancelFunc

	throttle *proofThrottle
	rejected atomic.Uint64
	junkLog  *ratelog.Limiter // connections refused before authentication
	authLog  *ratelog.Limiter // edges refused at authentication

	// flowPoll reads the replies of the UDP flows (hubudp.go).
	flowPoll  *flowPoller
	udpTarget targetResolver // TargetHost for new UDP flows

	// draining is set by Shutdown: streams the edges open are refused, but
	// those an edge that takes DRAIN opened before DRAIN reached it, until
	// drainSynced says they have all arrived.
	draining    atomic.Bool
	drainSynced atomic.Bool

	listMu      sync.Mutex // held by SetAllowedEdges
	mu          sync.Mutex
	lnClosed    bool // the tunnel listener is closed (Shutdown or Close)
	allowed     map[string]allowedEdge
	assignGen   uint64 // counts the allow lists that changed an assignment (assign.go)
	edges       map[string]*hubEdge
	handshaking map[io.Closer]*pendingConn
	evicted     int // entries of handshaking already evicted, not yet gone
	closed      bool
	wg          sync.WaitGroup

	// Guarded by mu too; read by Metrics (metrics.go).
	allowedLoaded bool                       // an allowed list was given
	traffic       map[string]*streamCounters // per allowed edge id
}

// allowedEdge is an entry of the allow list.
type allowedEdge struct {
	secret  string
	managed bool      // the hub assigns ports or a firewall: the edge must take ASSIGN
	assign  assignMsg // Seq is the assignGen of its last change
}

// pendingConn is a connection that has not authenticated yet.
type pendingConn struct {
	since   time.Time
	evicted bool
}

// hubEdge is one connected edge: the set of tunnel connections it spreads
// its streams over (see setPlace). It is connected from its first
// connection's arrival until its last one ends.
type hubEdge struct {
	id          string
	secret      string
	set         uint64
	conns       []tunnelConn // by setPlace.Index; nil where none; guarded by Hub.mu
	caps        uint32       // the edge's capability bits
	sentSeq     uint64       // Seq of the last ASSIGN sent to it; guarded by Hub.mu
	bound       portLists    // the ports it reports bound (BOUND); guarded by Hub.mu
	connectedAt time.Time
	remote      string
	ended       chan struct{} // closed when the last connection has ended
	transport   string        // TransportTLS or TransportQUIC, that of its connections
	flows       *hubFlows     // its UDP flows (hubudp.go)
}

// connsLocked returns the live connections; the caller holds Hub.mu.
func (e *hubEdge) connsLocked() []tunnelConn {
	out := make([]tunnelConn, 0, len(e.conns))
	for _, s := range e.conns {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// hubConn is one authenticated connection, before it joins its edge.
type hubConn struct {
	edgeID    string
	secret    string
	set       setPlace
	caps      uint32 // the edge's capability bits
	assignSeq uint64 // Seq of the ASSIGN sent in the handshake, 0 if none
	remote    string
	transport string // TransportTLS or TransportQUIC
	conn      tunnelConn
}

// StartHub validates cfg, loads or generates the TLS certificate, binds the
// tunnel port and starts accepting edges allowed by the given list.
func StartHub(cfg HubConfig, allowed []EdgeCredential) (*Hub, error) {
	return startHub(cfg, allowed, defaultProofLimits)
}

// startHub is StartHub with the limits of the proof throttle.
func startHub(cfg HubConfig, allowed []EdgeCredential, limits proofLimits) (*Hub, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	allow, err := allowMap(allowed, nil, 1)
	if err != nil {
		return nil, err
	}
	cert, err := hubCertificate(cfg.TLSCertPEM, cfg.TLSKeyPEM)
	if err != nil {
		return nil, err
	}
	ln, pc, quicErr, err := listenTunnel(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := cfg.Logger.With("side", "hub")
	h := &Hub{
		cfg: cfg, log: log, ln: ln, tlsConf: hubTLSConfig(cert),
		fingerprint: certFingerprint(cert), port: ln.Addr().(*net.TCPAddr).Port,
		ctx: ctx, cancel: cancel,
		allowed: allow, assignGen: 1, edges: make(map[string]*hubEdge), handshaking: make(map[io.Closer]*pendingConn),
		throttle: newProofThrottle(limits),
		junkLog:  ratelog.New(log, slog.LevelInfo, "%d more connections rejected before authentication"),
		authLog:  ratelog.New(log, slog.LevelWarn, "%d more edges rejected at authentication"),
	}
	h.flowPoll = newFlowPoller(h)
	h.allowedLoaded = allowed != nil
	h.setTrafficLocked(allow)
	if pc != nil {
		quicErr = h.startQUIC(pc)
	}
	if quicErr != nil {
		h.log.Warn("no QUIC listener: edges connect over TLS only", "udpPort", h.port, "err", unwrapOpError(quicErr).Error())
	}
	h.log.Info("hub listening", "tunnelPort", h.port, "quicPort", h.QUICPort(), "targetHost", cfg.TargetHost, "certSha256", h.fingerprint)
	h.wg.Add(2)
	go h.acceptLoop()
	go h.sweepUDP()
	return h, nil
}

// unwrapOpError drops the "listen tcp host:port:" prefix net adds.
func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Port is the bound tunnel port.
func (h *Hub) Port() int { return h.port }

// CertFingerprint is the SHA-256 of the hub's certificate, hex encoded.
func (h *Hub) CertFingerprint() string { return h.fingerprint }

// allowMap validates an allow list (ValidateEdgeList) and maps ids to
// entries. An assignment that differs from the one in old is stamped gen;
// one that is the same keeps its Seq, so that the edge is not told again.
func allowMap(edges []EdgeCredential, old map[string]allowedEdge, gen uint64) (map[string]allowedEdge, error) {
	if err := ValidateEdgeList(edges); err != nil {
		return nil, err
	}
	m := make(map[string]allowedEdge, len(edges))
	for _, e := range edges {
		a := allowedEdge{secret: e.Secret, managed: e.managed(), assign: assignFor(e)}
		a.assign.Seq = gen
		if prev, ok := old[e.ID]; ok && sameAssign(prev.assign, a.assign) {
			a.assign.Seq = prev.assign.Seq
		}
		m[e.ID] = a
	}
	return m, nil
}

// SetAllowedEdges replaces the allow list; edges no longer allowed, or whose
// secret changed, are disconnected at once. An invalid list changes nothing.
func (h *Hub) SetAllowedEdges(edges []EdgeCredential) error {
	h.listMu.Lock() // one list at a time, so that each is stamped against the one before
	defer h.listMu.Unlock()
	h.mu.Lock()
	gen := h.assignGen + 1
	old := h.allowed
	h.mu.Unlock()
	m, err := allowMap(edges, old, gen)
	if err != nil {
		return err
	}
	type kick struct {
		id     string
		conns  []tunnelConn
		reason string
	}
	var kicks []kick
	h.mu.Lock()
	h.assignGen = gen
	h.allowed, h.allowedLoaded = m, true
	h.setTrafficLocked(m)
	for id, e := range h.edges {
		a, ok := m[id]
		switch {
		case !ok:
			kicks = append(kicks, kick{id, e.connsLocked(), "edge no longer allowed"})
		case subtle.ConstantTimeCompare([]byte(a.secret), []byte(e.secret)) != 1:
			kicks = append(kicks, kick{id, e.connsLocked(), "edge credentials changed"})
		case a.managed && e.caps&capAssign == 0:
			kicks = append(kicks, kick{id, e.connsLocked(), errNoAssign})
		default:
			h.sendAssignLocked(e, a.assign)
		}
	}
	h.mu.Unlock()
	for _, k := range kicks {
		h.log.Info("disconnecting edge", "edgeId", k.id, "reason", k.reason)
		for _, s := range k.conns {
			s.Close(k.reason)
		}
	}
	return nil
}

func (h *Hub) lookupSecret(id string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a, ok := h.allowed[id]
	return a.secret, ok
}

// errNoAssign is why an edge that cannot take an assignment is refused
// when its allow list entry has one.
const errNoAssign = "the hub assigns this edge's ports or firewall, and the edge does not support that (protocol capability bit 2): upgrade the edge"

// sendAssignLocked sends a to edge e unless e has it already; h.mu is held.
// It goes on the connection of index 0, which every set has.
func (h *Hub) sendAssignLocked(e *hubEdge, a assignMsg) {
	if e.caps&capAssign == 0 || a.Seq == e.sentSeq || len(e.conns) == 0 || e.conns[0] == nil {
		return
	}
	e.sentSeq = a.Seq
	e.conns[0].Send(frameAssign, encodeAssign(a, a.Seq))
}

// Status reports the hub's state.
func (h *Hub) Status() HubStatus {
	h.mu.Lock()
	st := HubStatus{Running: !h.closed, TunnelPort: h.port, ConnectedEdges: []ConnectedEdge{}, CertSha256: h.fingerprint,
		PendingHandshakes: len(h.handshaking) - h.evicted, RejectedHandshakes: h.rejected.Load(), AuthFailures: h.throttle.failed()}
	st.ProxyProtocol = h.cfg.ProxyProtocol
	st.QUICPort = h.QUICPort()
	for _, e := range h.edges {
		conns := e.connsLocked()
		active := 0
		for _, s := range conns {
			active += s.ActiveStreams()
		}
		st.ConnectedEdges = append(st.ConnectedEdges, ConnectedEdge{
			EdgeID: e.id, ConnectedAt: e.connectedAt.Unix(), ActiveStreams: active, RemoteAddr: e.remote,
			Connections: len(conns), ListenPorts: slices.Clone(e.bound.TCP), ListenPortsUDP: slices.Clone(e.bound.UDP),
			ActiveUDPFlows: e.flows.active(), Transport: e.transport,
			UDPDatagramsDropped: e.flows.dropped(),
		})
	}
	h.mu.Unlock()
	slices.SortFunc(st.ConnectedEdges, func(a, b ConnectedEdge) int {
		if a.EdgeID < b.EdgeID {
			return -1
		}
		if a.EdgeID > b.EdgeID {
			return 1
		}
		return 0
	})
	return st
}

// Close stops accepting, closes every tunnel and stream, and waits for them.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.cancel()
	var errs error
	if err := h.closeListenerLocked(); err != nil {
		errs = multierror.Append(errs, fmt.Errorf("closing tunnel listener: %w", err))
	}
	for c := range h.handshaking {
		_ = c.Close()
	}
	for _, e := range h.edges {
		for _, s := range e.connsLocked() {
			s.Close("hub stopping")
		}
	}
	h.mu.Unlock()
	h.closeQUICListener()
	h.flowPoll.close() // flows opened from now on read with goroutines of their own, until their tunnel ends
	h.wg.Wait()
	if h.quic != nil {
		h.quic.close()
	}
	h.junkLog.Flush()
	h.authLog.Flush()
	h.log.Info("hub stopped")
	return errs
}

// closeListenerLocked closes the TCP tunnel listener once and makes the
// QUIC one refuse new connections (quicConnContext); h.mu is held. The
// QUIC listener itself is closed without h.mu (closeQUICListener): its
// Close waits for the handshakes in flight, whose ConnContext takes h.mu.
func (h *Hub) closeListenerLocked() error {
	if h.lnClosed {
		return nil
	}
	h.lnClosed = true
	return h.ln.Close()
}

// closeQUICListener closes the QUIC listener; h.mu must not be held.
func (h *Hub) closeQUICListener() {
	if h.quic != nil {
		h.quic.closeListener()
	}
}

// Shutdown stops the hub gracefully, in the manner of http.Server.Shutdown:
// it tells the edges that it stops (DRAIN: they send new clients to their
// other hubs), closes the tunnel listener at once and refuses every stream the edges
// open from then on (the edge resets that client), lets the streams already
// open run until none is left or ctx ends, then closes everything (Close).
// Connected tunnels stay up meanwhile, so open streams keep flowing. It
// returns ctx's error when streams were still open at the end.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.draining.Store(true)
	return drain(ctx, h.log, "hub", func() error {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil
		}
		// Edges that can take it are told first, so that they send new
		// clients to their other hubs at once (DRAIN, PROTOCOL.md section 11).
		var syncs []<-chan struct{}
		for _, e := range h.edges {
			if e.caps&capDrain != 0 {
				for _, c := range e.connsLocked() {
					c.Send(frameDrain, []byte("hub stopping"))
					syncs = append(syncs, c.Sync())
				}
			}
		}
		err := h.closeListenerLocked()
		h.mu.Unlock()
		h.closeQUICListener()
		// The streams those edges opened before DRAIN reached them are
		// served; once their PONGs are back, every such OPEN has been read.
		wait, cancel := context.WithTimeout(ctx, drainSyncTimeout)
		defer cancel()
		for _, ch := range syncs {
			select {
			case <-ch:
			case <-wait.Done():
			}
		}
		// An edge that picked this hub just before DRAIN may write the OPEN
		// a moment after its PONG: those are served too.
		_ = sleepCtx(wait, drainLinger)
		h.drainSynced.Store(true)
		return err
	}, h.activeStreams, h.Close)
}

// activeStreams counts the streams of every connected edge.
func (h *Hub) activeStreams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.edges {
		for _, c := range e.connsLocked() {
			n += c.ActiveStreams()
		}
	}
	return n
}

func (h *Hub) emit(name string, data any) {
	if h.cfg.Events != nil {
		h.cfg.Events(Event{Name: name, Data: data})
	}
}

func (h *Hub) acceptLoop() {
	defer h.wg.Done()
	acceptConns(h.ctx, h.ln, h.log, h.admit)
}

// admit starts the handshake of every new connection, whatever its address
// did before (see throttle.go); beyond the cap of unauthenticated
// connections the oldest goes.
func (h *Hub) admit(conn net.Conn) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = conn.Close()
		return
	}
	if len(h.handshaking)-h.evicted >= h.cfg.MaxPendingHandshakes {
		h.evictOldestLocked()
	}
	h.handshaking[conn] = &pendingConn{since: time.Now()}
	h.wg.Add(1)
	h.mu.Unlock()
	go h.serveConn(conn)
}

// evictOldestLocked drops the unauthenticated connection that has waited
// longest, so that a flood of idle or slow connections cannot keep a real
// edge out: a real handshake takes milliseconds and will finish first.
func (h *Hub) evictOldestLocked() {
	var oldest io.Closer
	var since time.Time
	for c, p := range h.handshaking {
		if !p.evicted && (oldest == nil || p.since.Before(since)) {
			oldest, since = c, p.since
		}
	}
	if oldest != nil {
		h.handshaking[oldest].evicted = true
		h.evicted++
		_ = oldest.Close()
	}
}

// serveConn runs one TCP connection of the tunnel port: TLS, the handshake,
// then the tunnel it carries.
func (h *Hub) serveConn(conn net.Conn) {
	defer h.wg.Done()
	var perr error
	defer func() {
		if perr != nil {
			_ = conn.Close()
		}
	}()
	defer recoverInto(h.log, "serving an edge", &perr)
	c, err := h.authenticateTLS(conn)
	evicted, closed := h.handshakeEnded(conn)
	if err != nil || closed {
		_ = conn.Close()
		if err != nil && !closed {
			h.refused(conn.RemoteAddr().String(), err, evicted)
		}
		return
	}
	h.serveTunnel(c)
}

// handshakeEnded takes key out of the pending handshakes and says whether
// it had been evicted and whether the hub has closed meanwhile.
func (h *Hub) handshakeEnded(key io.Closer) (evicted, closed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if pc := h.handshaking[key]; pc != nil {
		evicted = pc.evicted
	}
	if evicted {
		h.evicted--
	}
	delete(h.handshaking, key)
	return evicted, h.closed
}

// refused counts and logs (rate-limited) a connection that did not get in.
func (h *Hub) refused(remote string, err error, evicted bool) {
	h.rejected.Add(1)
	var ne net.Error
	switch {
	case evicted:
		h.junkLog.Log("connection rejected", "remote", remote, "reason", "dropped unauthenticated to make room for newer connections")
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		h.junkLog.Log("connection rejected", "remote", remote, "reason", "no authentication within "+h.cfg.HandshakeTimeout.String())
	case errors.Is(err, ErrAuthFailed):
		h.authLog.Log("edge rejected", "remote", remote, "reason", err.Error())
	default: // scanners, probes, broken clients
		h.junkLog.Log("connection rejected", "remote", remote, "reason", err.Error())
	}
}

// serveTunnel registers an authenticated connection with its edge, serves
// its streams until it ends, and reports the edge's arrival and departure.
func (h *Hub) serveTunnel(c *hubConn) {
	e, first := h.register(c)
	if e == nil {
		c.conn.Close("edge rejected")
		_ = c.conn.Serve(nil) // ends at once: frees what the connection holds
		return
	}
	c.conn.CountDropsIn(&e.flows.droppedInTunnel)
	if first {
		h.log.Info("edge connected", "edgeId", e.id, "remote", c.remote, "connections", int(c.set.Size), "transport", c.transport)
		h.emit(EventEdgeConnected, EdgeEvent{EdgeID: e.id, RemoteAddr: c.remote})
	}
	id := e.id
	reason := c.conn.Serve(&streamHandler{
		opened: func(st tunnelStream) { h.emit(EventStreamOpened, StreamEvent{EdgeID: id, StreamID: st.ID()}) },
		serve:  func(ctx context.Context, st tunnelStream) { h.serveStream(ctx, id, c.caps, st) },
		closed: func(st tunnelStream) { h.emit(EventStreamClosed, StreamEvent{EdgeID: id, StreamID: st.ID()}) },
		message: func(t frameType, p []byte) error {
			m, err := parseBound(p)
			if err != nil {
				return err
			}
			h.mu.Lock()
			e.bound = m.portLists
			h.mu.Unlock()
			h.log.Debug("edge ports bound", "edgeId", id, "listenPorts", m.TCP, "listenPortsUdp", m.UDP)
			return nil
		},
		flows: e.flows.handler(c.conn),
	})
	e.flows.dropConn(c.conn)
	h.mu.Lock()
	e.conns[c.set.Index] = nil
	last := len(e.connsLocked()) == 0
	if last && h.edges[e.id] == e {
		delete(h.edges, e.id)
	}
	h.mu.Unlock()
	if !last {
		h.log.Info("edge connection ended", "edgeId", e.id, "remote", c.remote, "index", int(c.set.Index), "reason", reason.Error())
		return
	}
	close(e.ended)
	h.log.Info("edge disconnected", "edgeId", e.id, "remote", c.remote, "reason", reason.Error())
	h.emit(EventEdgeDisconnected, EdgeDisconnectedEvent{EdgeID: e.id, Reason: reason.Error()})
}

// authenticateTLS runs TLS and the handshake under one deadline and returns
// the frame mux over that TLS connection, not yet serving.
func (h *Hub) authenticateTLS(conn net.Conn) (*hubConn, error) {
	deadline := time.Now().Add(h.cfg.HandshakeTimeout)
	_ = conn.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(h.ctx, deadline)
	defer cancel()
	tc := tls.Server(conn, h.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &tlsHandshakeError{err}
	}
	c, peer, err := h.authenticate(ctx, tc, remoteIP(conn))
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c.remote = conn.RemoteAddr().String()
	c.transport = TransportTLS
	sess := newSession(tc, true, h.cfg.Tuning, peer, h.log.With("edgeId", c.edgeID), sessionHooks{})
	sess.countInto(h.trafficFor(c.edgeID))
	c.conn = sess
	return c, nil
}

// authenticate runs the hub's side of the handshake over hc, a transport's
// connection before its streams exist, from the client address addr. Proofs
// are throttled by h.throttle (throttle.go). It returns the edge and what the
// handshake learnt about it.
func (h *Hub) authenticate(ctx context.Context, hc handshakeConn, addr netip.Addr) (*hubConn, peerParams, error) {
	var usedSecret string
	res, err := hubHandshake(hc, h.cfg.Window, func(id string) (string, bool) {
		s, ok := h.lookupSecret(id)
		usedSecret = s
		return s, ok
	}, func(id string, known bool) (func(bool), error) {
		charge, err := h.throttle.enter(ctx, addr, id, known)
		if err != nil {
			return nil, err
		}
		return func(ok bool) {
			if hold := charge.settle(ok); hold > 0 {
				_ = sleepCtx(ctx, hold)
			}
		}, nil
	})
	if err != nil {
		return nil, peerParams{}, err
	}
	if res.peer.window < minWindow || res.peer.window > maxWindow {
		return nil, peerParams{}, fmt.Errorf("edge %q announced a window of %d bytes (allowed %d-%d)", res.edgeID, res.peer.window, minWindow, maxWindow)
	}
	c := &hubConn{edgeID: res.edgeID, secret: usedSecret, set: res.set, caps: res.peer.caps}
	if err := h.sendFirstAssign(hc, c); err != nil {
		return nil, peerParams{}, err
	}
	return c, res.peer, nil
}

// sendFirstAssign ends the handshake of an edge that takes assignments
// with its current one, on the first connection of its set, so that the
// edge binds its ports and arms its firewall before its tunnel is up. An
// edge that cannot take the assignment its entry has is refused (GOAWAY).
func (h *Hub) sendFirstAssign(hc handshakeConn, c *hubConn) error {
	h.mu.Lock()
	a, ok := h.allowed[c.edgeID]
	h.mu.Unlock()
	switch {
	case !ok: // the list changed meanwhile: register refuses it
		return nil
	case a.managed && c.caps&capAssign == 0:
		_ = newHandshakeIO(hc).send(frameGoAway, []byte(errNoAssign))
		return fmt.Errorf("edge %q refused: %s", c.edgeID, errNoAssign)
	case c.caps&capAssign == 0 || c.set.Index != 0:
		return nil
	}
	c.assignSeq = a.assign.Seq
	return newHandshakeIO(hc).send(frameAssign, encodeAssign(a.assign, a.assign.Seq))
}

// register adds c to its edge. A connection of the edge's current set joins
// it; one of another set replaces the edge's connections: they are closed
// first and waited for, so edgeDisconnected of the old set comes before
// edgeConnected of the new one. It returns the edge and whether c is its
// first connection, or nil when c must not serve: the hub stops, the edge's
// secret changed while it authenticated, or c's place is taken.
func (h *Hub) register(c *hubConn) (*hubEdge, bool) {
	for {
		h.mu.Lock()
		if h.closed || h.draining.Load() {
			h.mu.Unlock()
			return nil, false
		}
		a, ok := h.allowed[c.edgeID]
		if !ok || subtle.ConstantTimeCompare([]byte(a.secret), []byte(c.secret)) != 1 || a.managed && c.caps&capAssign == 0 {
			h.mu.Unlock()
			h.log.Warn("edge rejected", "edgeId", c.edgeID, "reason", "allow list changed during authentication")
			return nil, false
		}
		old := h.edges[c.edgeID]
		if old == nil {
			e := &hubEdge{id: c.edgeID, secret: c.secret, set: c.set.ID, conns: make([]tunnelConn, c.set.Size),
				caps: c.caps, sentSeq: c.assignSeq, bound: portLists{TCP: []int{}, UDP: []int{}},
				connectedAt: time.Now(), remote: c.remote, ended: make(chan struct{}), transport: c.transport}
			ctr := h.traffic[c.edgeID]
			if ctr == nil {
				ctr = new(streamCounters)
			}
			e.flows = newHubFlows(h, c.edgeID, ctr)
			e.conns[c.set.Index] = c.conn
			h.edges[c.edgeID] = e
			h.sendAssignLocked(e, a.assign) // if the list changed since the handshake
			h.mu.Unlock()
			return e, true
		}
		if old.set == c.set.ID && subtle.ConstantTimeCompare([]byte(old.secret), []byte(c.secret)) == 1 {
			var why string
			switch {
			case len(old.conns) != int(c.set.Size):
				why = fmt.Sprintf("set of %d connections, the edge's has %d", c.set.Size, len(old.conns))
			case old.conns[c.set.Index] != nil:
				why = fmt.Sprintf("connection %d of the set is already connected", c.set.Index)
			}
			if why == "" {
				old.conns[c.set.Index] = c.conn
				if c.set.Index == 0 {
					old.sentSeq = c.assignSeq
					h.sendAssignLocked(old, a.assign)
				}
			}
			h.mu.Unlock()
			if why != "" {
				h.log.Warn("edge connection rejected", "edgeId", c.edgeID, "remote", c.remote, "reason", why)
				return nil, false
			}
			return old, false
		}
		conns := old.connsLocked()
		h.mu.Unlock()
		for _, s := range conns {
			s.Close("replaced by a new tunnel from " + c.remote)
		}
		select {
		case <-old.ended:
		case <-time.After(5 * time.Second):
			h.log.Warn("old tunnel did not end in time", "edgeId", c.edgeID)
			return nil, false
		}
	}
}

// serveStream serves a stream the edge opened: it connects it to
// targetHost:<edge port>, writes the PROXY header in one write before any
// client byte, then hands the stream the connection. ctx ends with the tunnel.
func (h *Hub) serveStream(ctx context.Context, edgeID string, caps uint32, st tunnelStream) {
	if h.draining.Load() && (caps&capDrain == 0 || h.drainSynced.Load()) {
		st.Reset("hub shutting down")
		return
	}
	hdr := st.Header()
	addr := net.JoinHostPort(h.cfg.TargetHost, strconv.Itoa(int(hdr.Destination.Port())))
	d := net.Dialer{Timeout: h.cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		h.log.Debug("target unreachable", "edgeId", edgeID, "stream", st.ID(), "target", addr, "err", err)
		st.Reset("target unreachable: " + unwrapOpError(err).Error())
		return
	}
	var buf [maxProxyHeaderLen]byte
	if _, err := conn.Write(h.appendProxyHeader(buf[:0], hdr)); err != nil {
		_ = conn.Close()
		st.Reset("target closed before the PROXY header: " + unwrapOpError(err).Error())
		return
	}
	st.Attach(conn)
}

// drainSyncTimeout bounds how long Shutdown waits for the edges to answer
// the PING that follows DRAIN.
const drainSyncTimeout = 2 * time.Second

// drainLinger is how long after those PONGs new streams of such edges are
// still served.
const drainLinger = 100 * time.Millisecond

// tlsHandshakeError is a failed TLS handshake on the tunnel port.
type tlsHandshakeError struct{ err error }

func (e *tlsHandshakeError) Error() string { return "TLS handshake failed: " + e.err.Error() }
func (e *tlsHandshakeError) Unwrap() error { return e.err }

package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/serve-zone/remoteingress/internal/backoff"
)

// Several hubs (CONTRACT section 12). An edge holds one hubLink per hub
// address: its own tunnel, backoff and state. In HubSpread mode every link
// runs its own loop and new clients go to the live link with the fewest
// active streams; in HubFailover mode one loop walks the links in list
// order and keeps at most one tunnel up. A hub that says it is stopping
// (DRAIN) gets no new clients from then on, while its open streams finish.

// Hub modes (EdgeConfig.HubMode).
const (
	// HubSpread keeps a tunnel to every hub and spreads new clients over
	// the live ones.
	HubSpread = "spread"
	// HubFailover keeps one tunnel, to the first hub in list order that
	// works.
	HubFailover = "failover"
)

// hubLink is the edge's tunnel to one hub address.
type hubLink struct {
	addr    string // host:port dialed
	entry   string // the configured hub it comes from (host:port)
	tlsConf *tls.Config
	backoff backoff.Exponential
	ctx     context.Context // ends when the link is retired or the edge stops
	cancel  context.CancelFunc

	// Guarded by Edge.mu.
	retired   bool       // its name no longer resolves to addr: no new clients, no reconnect
	tunnel    *edgeConns // nil while down
	draining  bool       // the hub is stopping: no new clients
	lastError string
	attempts  int
	reported  bool // a tunnelDisconnected was sent for the current outage
}

// HubLinkStatus is one hub of EdgeStatus.Hubs.
type HubLinkStatus struct {
	Address       string `json:"address"`
	Connected     bool   `json:"connected"`
	ActiveStreams int    `json:"activeStreams"`
	// Transport is "tls" or "quic" while connected, else null.
	Transport *string `json:"transport"`
	// Draining: the hub said it is stopping; it gets no new clients.
	Draining  bool   `json:"draining,omitempty"`
	LastError string `json:"lastError,omitempty"`
}

// resolveHub turns a configured hub into link addresses: a name that
// resolves to several addresses counts as that many hubs (each dialed by
// address, verified under its name); one that resolves to one address, or
// does not resolve now, is dialed by name (each dial resolves it again). ok
// is false when the name did not resolve.
func resolveHub(ctx context.Context, entry string, lookup func(context.Context, string) ([]string, error)) (addrs []string, name string, ok bool) {
	host, port, err := net.SplitHostPort(entry)
	if err != nil {
		return []string{entry}, entry, true
	}
	if net.ParseIP(host) != nil {
		return []string{entry}, host, true
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ips, err := lookup(lctx, host)
	cancel()
	if err != nil || len(ips) < 2 {
		return []string{entry}, host, err == nil
	}
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip, port))
	}
	return addrs, host, true
}

// newLink makes the link to addr of the configured hub entry, whose
// certificate is verified under name.
func (e *Edge) newLink(entry, addr, name string) (*hubLink, error) {
	if e.cfg.HubServerName != "" {
		name = e.cfg.HubServerName
	}
	tlsConf, err := edgeTLSConfigFor(name, e.cfg.HubCertSHA256, e.cfg.HubCAPEM)
	if err != nil {
		return nil, err
	}
	l := &hubLink{addr: addr, entry: entry, tlsConf: tlsConf,
		backoff: backoff.Exponential{Min: e.cfg.ReconnectMin, Max: e.cfg.ReconnectMax}}
	l.ctx, l.cancel = context.WithCancel(e.ctx)
	return l, nil
}

// refreshLoop resolves the hub names again every Tuning.hubRefresh, so
// that a name whose addresses change (replicas replaced in a rolling
// update) is followed: a new address gets a link, one that is gone is
// retired (it takes no new client; its tunnel ends when its hub closes it).
func (e *Edge) refreshLoop(entries []string) {
	defer e.wg.Done()
	t := time.NewTicker(e.cfg.hubRefresh)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		for _, entry := range entries {
			addrs, name, ok := resolveHub(e.ctx, entry, e.cfg.lookupHost())
			if ok {
				e.followHub(entry, addrs, name)
			}
		}
	}
}

// followHub makes the links of entry those of addrs.
func (e *Edge) followHub(entry string, addrs []string, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	have := map[string]bool{}
	for _, l := range e.links {
		if l.entry != entry || l.retired {
			continue
		}
		if slices.Contains(addrs, l.addr) {
			have[l.addr] = true
			continue
		}
		l.retired = true
		l.cancel()
		e.log.Info("hub address gone from its name: retired", "hub", l.addr, "name", name)
	}
	for _, a := range addrs {
		if have[a] {
			continue
		}
		l, err := e.newLink(entry, a, name)
		if err != nil {
			e.log.Warn("cannot add hub", "hub", a, "err", err)
			continue
		}
		e.links = append(e.links, l)
		e.log.Info("hub address added from its name", "hub", a, "name", name)
		if e.cfg.HubMode != HubFailover {
			e.wg.Add(1)
			go e.spreadLoop(l)
		}
	}
}

// dropLinkLocked removes a retired link that is down; e.mu is held.
func (e *Edge) dropLinkLocked(l *hubLink) {
	if !l.retired || l.tunnel != nil {
		return
	}
	e.links = slices.DeleteFunc(e.links, func(x *hubLink) bool { return x == l })
}

// liveLinks is a snapshot of the links not retired, in list order.
func (e *Edge) liveLinks() []*hubLink {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*hubLink, 0, len(e.links))
	for _, l := range e.links {
		if !l.retired {
			out = append(out, l)
		}
	}
	return out
}

// sleepLink waits d, or less when l or the edge ends; false then.
func sleepLink(l *hubLink, d time.Duration) bool { return sleepCtx(l.ctx, d) == nil }

// HubAddrs is the configured hubs as host:port: Hubs (each with HubPort
// where it has none), or HubHost:HubPort.
func (c EdgeConfig) HubAddrs() []string {
	if len(c.Hubs) == 0 {
		return []string{net.JoinHostPort(c.HubHost, strconv.Itoa(c.HubPort))}
	}
	out := make([]string, len(c.Hubs))
	for i, h := range c.Hubs {
		out[i] = withPort(h, c.HubPort)
	}
	return out
}

// withPort adds port to a hub entry that has none.
func withPort(h string, port int) string {
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	return net.JoinHostPort(h, strconv.Itoa(port))
}

// pickTunnel returns the tunnel for a new client: the live link that is
// not draining with the fewest active streams, the links taking turns
// among equals (in failover mode there is one), or nil: a hub that said it stops gets no new client, which is then
// closed at once like one that arrives while every tunnel is down.
func (e *Edge) pickTunnel() *edgeConns {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.links) == 1 {
		if l := e.links[0]; l.tunnel != nil && !l.draining && !l.retired {
			return l.tunnel
		}
		return nil
	}
	var best *edgeConns
	bestStreams := 0
	start := int(e.pickNext.Add(1)) // ties go round-robin
	for i := range e.links {
		l := e.links[(start+i)%len(e.links)]
		if l.tunnel == nil || l.draining || l.retired {
			continue
		}
		if n := l.tunnel.activeStreams(); best == nil || n < bestStreams {
			best, bestStreams = l.tunnel, n
		}
	}
	return best
}

// tunnelLive reports whether t is the tunnel of a link now.
func (e *Edge) tunnelLive(t *edgeConns) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.links {
		if l.tunnel == t {
			return true
		}
	}
	return false
}

// anyUpLocked reports whether a tunnel is up; e.mu is held.
func (e *Edge) anyUpLocked() bool {
	for _, l := range e.links {
		if l.tunnel != nil {
			return true
		}
	}
	return false
}

// spreadLoop keeps the tunnel of one link up: connect, serve, and after
// any failure wait the link's backoff delay and try again.
func (e *Edge) spreadLoop(l *hubLink) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		e.dropLinkLocked(l)
		e.mu.Unlock()
	}()
	attempt := 0
	for tries := 0; l.ctx.Err() == nil; tries++ {
		if tries > 0 {
			e.reconnects.Add(1)
		}
		if !e.serveLink(l, attempt) {
			if l.ctx.Err() != nil {
				return
			}
			d := l.backoff.Delay(attempt)
			attempt++
			e.log.Warn("tunnel connect failed", "hub", l.addr, "reason", e.linkError(l), "retryIn", d.Round(time.Millisecond).String())
			if !sleepLink(l, d) {
				return
			}
			continue
		}
		attempt = 0
		if !sleepLink(l, l.backoff.Delay(0)) {
			return
		}
	}
}

// failoverLoop keeps one tunnel up, to the first link in list order that
// connects: after the current one fails it starts again from the first, so
// an earlier hub that came back is preferred. A whole pass that fails waits
// a backoff delay.
func (e *Edge) failoverLoop() {
	defer e.wg.Done()
	attempt := 0
	for tries := 0; e.ctx.Err() == nil; tries++ {
		if tries > 0 {
			e.reconnects.Add(1)
		}
		served := false
		links := e.liveLinks()
		for _, l := range links {
			if e.ctx.Err() != nil {
				return
			}
			if l.ctx.Err() == nil && e.serveLink(l, attempt) {
				served = true
				break
			}
		}
		e.mu.Lock()
		for _, l := range slices.Clone(e.links) {
			e.dropLinkLocked(l)
		}
		e.mu.Unlock()
		if len(links) == 0 {
			links = []*hubLink{{backoff: backoff.Exponential{Min: e.cfg.ReconnectMin, Max: e.cfg.ReconnectMax}}}
		}
		if e.ctx.Err() != nil {
			return
		}
		if served {
			attempt = 0
			if !e.sleep(links[0].backoff.Delay(0)) {
				return
			}
			continue
		}
		d := links[0].backoff.Delay(attempt)
		attempt++
		e.log.Warn("no hub reachable", "retryIn", d.Round(time.Millisecond).String())
		if !e.sleep(d) {
			return
		}
	}
}

// serveLink connects l and serves its tunnel until it ends; false when it
// did not connect.
func (e *Edge) serveLink(l *hubLink, attempt int) bool {
	tunnel, assign, err := e.connectSet(l)
	if err != nil {
		if e.ctx.Err() != nil {
			return false
		}
		reason := "cannot connect to hub " + l.addr + ": " + err.Error()
		e.mu.Lock()
		l.lastError, l.attempts = reason, attempt+1
		report := !l.reported
		l.reported = true
		e.mu.Unlock()
		if report {
			e.emit(EventTunnelDisconnected, TunnelDisconnectedEvent{Reason: reason, Hub: l.addr})
		}
		return false
	}
	// The ports and the firewall of the assignment are in force before the
	// tunnel is: no client goes through under the previous ones.
	onFirst, onOthers, report := e.tunnelHandlers(l, tunnel, assign)
	e.mu.Lock()
	if e.closed { // Close found no tunnel to close: this one is closed here
		e.mu.Unlock()
		tunnel.close("edge stopping")
		tunnel.run(nil, nil, nil)
		return true
	}
	l.tunnel, l.draining = tunnel, false
	l.lastError, l.attempts, l.reported = "", 0, false
	e.mu.Unlock()
	report()
	e.log.Info("tunnel connected", "hub", l.addr, "connections", len(tunnel.conns), "transport", tunnel.transport)
	e.emit(EventTunnelConnected, TunnelConnectedEvent{HubAddr: l.addr, Hub: l.addr, Transport: tunnel.transport})
	reason := tunnel.run(onFirst, onOthers, e.udp.handler)
	e.mu.Lock()
	l.tunnel, l.draining = nil, false
	l.lastError, l.reported = reason.Error(), true
	e.mu.Unlock()
	e.udp.dropTunnel(tunnel)
	e.log.Warn("tunnel disconnected", "hub", l.addr, "reason", reason.Error())
	e.emit(EventTunnelDisconnected, TunnelDisconnectedEvent{Reason: reason.Error(), Hub: l.addr})
	return true
}

func (e *Edge) linkError(l *hubLink) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return l.lastError
}

// tunnelHandlers apply the first assignment of a new tunnel (see
// takeAssignments) and return the handlers of the hub's messages on it (on
// the connection of index 0 the later assignments, and on every connection
// DRAIN, after which l gets no new clients) and the reporting of that first
// assignment, to run once the tunnel is recorded.
func (e *Edge) tunnelHandlers(l *hubLink, t *edgeConns, first *assignMsg) (onFirst, onOthers *streamHandler, report func()) {
	assigns, report := e.takeAssignments(t, first)
	drained := func(p []byte) {
		e.mu.Lock()
		was := l.draining
		l.draining = true
		e.mu.Unlock()
		if !was {
			e.log.Info("hub stopping: new clients go to the other hubs", "hub", l.addr, "reason", sanitizeReason(p))
		}
	}
	onFirst = &streamHandler{message: func(ft frameType, p []byte) error {
		if ft == frameDrain {
			drained(p)
			return nil
		}
		if assigns == nil {
			return protoErr("unexpected %s", ft)
		}
		return assigns(ft, p)
	}}
	onOthers = &streamHandler{message: func(ft frameType, p []byte) error {
		if ft != frameDrain {
			return protoErr("%s on a connection of the set but the first", ft)
		}
		drained(p)
		return nil
	}}
	return onFirst, onOthers, report
}

// hubsStatusLocked is the per-hub part of EdgeStatus; e.mu is held.
func (e *Edge) hubsStatusLocked() []HubLinkStatus {
	out := make([]HubLinkStatus, 0, len(e.links))
	for _, l := range e.links {
		st := HubLinkStatus{Address: l.addr, Connected: l.tunnel != nil, Draining: l.draining && l.tunnel != nil, LastError: l.lastError}
		if l.tunnel != nil {
			st.ActiveStreams = l.tunnel.activeStreams()
			tr := l.tunnel.transport
			st.Transport = &tr
			st.LastError = ""
		}
		out = append(out, st)
	}
	return out
}

package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"
)

// The hub's QUIC listener, on UDP TunnelPort beside TLS on TCP. A QUIC
// connection counts as a pending handshake from its first Initial (quic-go
// asks ConnContext) until the edge has proven itself on the control
// stream; the cap and the eviction of the oldest are the TCP listener's
// (hub.go admit), so a flood of Initials or of half-done handshakes cannot
// keep a real edge out: evicting a QUIC handshake in flight cancels its
// context, which aborts it. While more than half the cap is pending, new
// connections must first prove their address with a Retry (one more round
// trip, no state kept for a spoofed source).

// quicListener is the hub's QUIC side.
type quicListener struct {
	pc   *net.UDPConn
	tr   *quic.Transport
	ln   *quic.Listener
	port int
}

// quicPendingKey keys the pending entry of a QUIC connection in its context.
type quicPendingKey struct{}

// quicPending is a QUIC connection in h.handshaking.
type quicPending struct {
	cancel context.CancelCauseFunc
	conn   *quic.Conn // set once accepted; guarded by Hub.mu
}

var errEvicted = errors.New("dropped unauthenticated to make room for newer connections")

// Close implements io.Closer for the eviction: it aborts the handshake or
// closes the connection. It is called with Hub.mu held, maybe from
// quic-go's own ConnContext call, so it never waits: CloseWithError waits
// for the connection's loop and runs on a goroutine of its own.
func (p *quicPending) Close() error {
	p.cancel(errEvicted)
	if qc := p.conn; qc != nil {
		go func() { _ = qc.CloseWithError(quicCloseCode, "authentication timed out") }()
	}
	return nil
}

// listenTunnel binds the tunnel port: TCP, and UDP of the same number for
// QUIC unless off. With port 0 it picks a number free for both; with a
// fixed port that UDP cannot have, the hub runs without QUIC (quicErr).
func listenTunnel(cfg HubConfig) (ln net.Listener, pc *net.UDPConn, quicErr error, err error) {
	for attempt := 0; ; attempt++ {
		addr := net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.TunnelPort))
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cannot listen on tunnel port %d: %v", cfg.TunnelPort, unwrapOpError(err))
		}
		if cfg.DisableQUIC {
			return ln, nil, nil, nil
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, quicErr = listenQUICSocket(net.JoinHostPort(cfg.ListenHost, strconv.Itoa(port)))
		if quicErr == nil || cfg.TunnelPort != 0 || attempt >= 16 {
			return ln, pc, quicErr, nil
		}
		_ = ln.Close() // that number's UDP port is taken: try another
	}
}

// startQUIC starts the QUIC listener on pc.
func (h *Hub) startQUIC(pc *net.UDPConn) error {
	quicBuffers(pc, h.log)
	q := &quicListener{pc: pc, port: pc.LocalAddr().(*net.UDPAddr).Port}
	q.tr = &quic.Transport{Conn: pc, ConnContext: h.quicConnContext, VerifySourceAddress: h.quicVerifyAddress}
	ln, err := q.tr.Listen(quicTLSConfig(h.tlsConf), quicConfig(h.cfg.Tuning, true))
	if err != nil {
		_ = q.tr.Close()
		_ = pc.Close()
		return err
	}
	q.ln = ln
	h.quic = q
	h.wg.Add(1)
	go h.acceptQUIC()
	return nil
}

// QUICPort is the UDP port of the QUIC listener, 0 when there is none.
func (h *Hub) QUICPort() int {
	if h.quic == nil {
		return 0
	}
	return h.quic.port
}

func (q *quicListener) closeListener() { _ = q.ln.Close() }

// close ends the listener, its connections and its socket (a Transport
// does not close a socket it was given).
func (q *quicListener) close() {
	_ = q.ln.Close()
	_ = q.tr.Close()
	_ = q.pc.Close()
}

// quicConnContext admits a new QUIC connection attempt as a pending handshake.
func (h *Hub) quicConnContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.lnClosed {
		return nil, errors.New("hub stopping")
	}
	if len(h.handshaking)-h.evicted >= h.cfg.MaxPendingHandshakes {
		h.evictOldestLocked()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	p := &quicPending{cancel: cancel}
	h.handshaking[p] = &pendingConn{since: time.Now()}
	// ctx ends when the handshake fails or, after it succeeded, when the
	// connection ends; by then serveQUIC has taken p out unless it failed.
	context.AfterFunc(ctx, func() { h.quicHandshakeEnded(p) })
	return context.WithValue(ctx, quicPendingKey{}, p), nil
}

// quicHandshakeEnded takes out p if its QUIC handshake failed before the
// connection was accepted.
func (h *Hub) quicHandshakeEnded(p *quicPending) {
	h.mu.Lock()
	pc, ok := h.handshaking[p]
	accepted := p.conn != nil
	if ok && !accepted {
		if pc.evicted {
			h.evicted--
		}
		delete(h.handshaking, p)
	}
	h.mu.Unlock()
	if ok && !accepted && !pc.evicted {
		h.rejected.Add(1)
	}
}

// quicVerifyAddress asks for a Retry while more than half the pending cap is used.
func (h *Hub) quicVerifyAddress(net.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.handshaking)-h.evicted > h.cfg.MaxPendingHandshakes/2
}

func (h *Hub) acceptQUIC() {
	defer h.wg.Done()
	for {
		qc, err := h.quic.ln.Accept(h.ctx)
		if err != nil {
			return
		}
		p, _ := qc.Context().Value(quicPendingKey{}).(*quicPending)
		h.mu.Lock()
		_, pending := h.handshaking[p]
		if h.closed || p == nil || !pending {
			h.mu.Unlock()
			_ = qc.CloseWithError(quicCloseCode, "hub stopping")
			continue
		}
		p.conn = qc
		h.wg.Add(1)
		h.mu.Unlock()
		go h.serveQUIC(qc, p)
	}
}

// serveQUIC runs one QUIC connection: the handshake on its control stream,
// then the tunnel it carries.
func (h *Hub) serveQUIC(qc *quic.Conn, p *quicPending) {
	defer h.wg.Done()
	var perr error
	defer func() {
		if perr != nil {
			_ = qc.CloseWithError(quicCloseProtocol, "internal error")
		}
	}()
	defer recoverInto(h.log, "serving an edge", &perr)
	c, err := h.authenticateQUIC(qc)
	evicted, closed := h.handshakeEnded(p)
	if err != nil || closed {
		_ = qc.CloseWithError(quicCloseCode, ErrAuthFailed.Error())
		if err != nil && !closed {
			h.refused(qc.RemoteAddr().String(), err, evicted)
		}
		return
	}
	h.serveTunnel(c)
}

// authenticateQUIC runs the handshake on the connection's first stream
// under the handshake deadline.
func (h *Hub) authenticateQUIC(qc *quic.Conn) (*hubConn, error) {
	deadline := time.Now().Add(h.cfg.HandshakeTimeout)
	ctx, cancel := context.WithDeadline(h.ctx, deadline)
	defer cancel()
	stop := context.AfterFunc(qc.Context(), cancel)
	defer stop()
	ctrl, err := qc.AcceptStream(ctx)
	if err != nil {
		if cause := context.Cause(qc.Context()); errors.Is(cause, errEvicted) {
			return nil, cause
		}
		return nil, err
	}
	_ = ctrl.SetDeadline(deadline)
	hc := quicHandshake{Stream: ctrl, qc: qc}
	var addr netip.Addr
	if ua, ok := qc.RemoteAddr().(*net.UDPAddr); ok {
		addr = ua.AddrPort().Addr().Unmap()
	}
	c, peer, err := h.authenticate(ctx, hc, addr)
	if err != nil {
		return nil, err
	}
	_ = ctrl.SetDeadline(time.Time{})
	c.remote = qc.RemoteAddr().String()
	c.transport = TransportQUIC
	conn := newQUICConn(qc, ctrl, true, h.cfg.Tuning, peer, h.log.With("edgeId", c.edgeID))
	conn.stats = h.trafficFor(c.edgeID)
	c.conn = conn
	return c, nil
}

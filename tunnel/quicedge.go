package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// errQUICHandshake wraps a QUIC attempt that did not get as far as a
// completed QUIC handshake: the one failure after which TransportAuto
// uses TLS.
type errQUICHandshake struct{ err error }

func (e *errQUICHandshake) Error() string { return "QUIC handshake: " + e.err.Error() }
func (e *errQUICHandshake) Unwrap() error { return e.err }

// connectQUIC dials the hub over QUIC, runs the mutual authentication on
// the connection's first stream under the handshake deadline, and returns
// the tunnel connection, ready to serve (as connectTLS does for TLS).
// quicWait bounds the QUIC handshake alone.
func (e *Edge) connectQUIC(l *hubLink, set setPlace, slots *streamSlots, first chan<- assignMsg, quicWait time.Duration) (conn tunnelConn, err error) {
	defer recoverInto(e.log, "connecting to the hub", &err)
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.HandshakeTimeout)
	defer cancel()
	raddr, err := net.ResolveUDPAddr("udp", l.addr)
	if err != nil {
		return nil, &errQUICHandshake{unwrapOpError(err)}
	}
	// A connected socket: the kernel then reports the hub's port
	// unreachable (a hub killed, its host up) as an error on the socket,
	// which ends the connection at once instead of at the idle timeout.
	// Only hard ICMP errors do that (no IP_RECVERR): a network's "host
	// unreachable" in a blip does not.
	pc, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, &errQUICHandshake{unwrapOpError(err)}
	}
	quicBuffers(pc, e.log)
	tr := &quic.Transport{Conn: connectedUDP{pc}}
	dialCtx, dialCancel := context.WithTimeout(ctx, quicWait)
	qc, err := tr.Dial(dialCtx, raddr, quicTLSConfig(l.tlsConf), quicConfig(e.cfg.Tuning, false))
	dialCancel()
	if err != nil {
		_ = tr.Close()
		_ = pc.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", quicWait)
		}
		return nil, &errQUICHandshake{err}
	}
	context.AfterFunc(qc.Context(), func() { _ = tr.Close(); _ = pc.Close() })
	fail := func(err error) (tunnelConn, error) {
		_ = qc.CloseWithError(quicCloseCode, "handshake failed")
		if ctx.Err() != nil && e.ctx.Err() == nil {
			err = fmt.Errorf("handshake timed out after %s", e.cfg.HandshakeTimeout)
		}
		return nil, err
	}
	ctrl, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return fail(err)
	}
	deadline, _ := ctx.Deadline()
	_ = ctrl.SetDeadline(deadline)
	hc := quicHandshake{Stream: ctrl, qc: qc}
	peer, err := edgeHandshake(hc, e.cfg.EdgeID, e.cfg.Secret, e.cfg.Window, set, ourCaps)
	if err != nil {
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && ae.Remote {
			err = &remoteCloseError{Reason: sanitizeReason([]byte(ae.ErrorMessage))}
		}
		return fail(err)
	}
	if peer.window < minWindow || peer.window > maxWindow {
		return fail(fmt.Errorf("hub announced a window of %d bytes (allowed %d-%d)", peer.window, minWindow, maxWindow))
	}
	if set.Index == 0 && peer.caps&capAssign != 0 {
		m, err := readFirstAssign(hc)
		if err != nil {
			return fail(err)
		}
		first <- m
	}
	_ = ctrl.SetDeadline(time.Time{})
	c := newQUICConn(qc, ctrl, false, e.cfg.Tuning, peer, e.log)
	c.slots = slots
	c.stats = &e.traffic
	c.CountDropsIn(&e.udp.dropped)
	return c, nil
}

// connectedUDP lets quic-go send on a connected UDP socket: Go refuses a
// destination address there, so the writes drop it (it is the one the
// socket is connected to). Everything else, batched reads and GSO
// included, is the socket's own.
type connectedUDP struct{ *net.UDPConn }

// WriteTo implements net.PacketConn.
func (c connectedUDP) WriteTo(b []byte, _ net.Addr) (int, error) { return c.Write(b) }

// WriteMsgUDP is the socket's, without the address.
func (c connectedUDP) WriteMsgUDP(b, oob []byte, _ *net.UDPAddr) (n, oobn int, err error) {
	return c.UDPConn.WriteMsgUDP(b, oob, nil)
}

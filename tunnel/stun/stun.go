package stun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	pion "github.com/pion/stun/v3"
)

const (
	// defaultTimeout bounds Discover when the context carries no
	// deadline of its own.
	defaultTimeout = 5 * time.Second
	// initialRTO is the first retransmission timeout (RFC 5389 §7.2.1
	// suggests 500 ms for unknown paths; a public IP probe on start-up wants
	// to be snappier, and the doubling keeps it polite).
	initialRTO = 250 * time.Millisecond
	// maxRTO caps the doubling so that a long context deadline still
	// sees regular retransmissions.
	maxRTO = 4 * time.Second
	// readBufferSize is large enough for any Binding response a sane
	// server sends over UDP (RFC 5389 §7.1 keeps messages below the path
	// MTU); longer datagrams are truncated and then fail to decode.
	readBufferSize = 1500
)

// Discover asks the STUN server at server ("host:port", e.g.
// "stun.l.google.com:19302" or "[2001:db8::1]:3478") for the public address
// of this host, as the server sees it, using a single RFC 5389 Binding
// transaction over UDP.
//
// The host is resolved with ctx; an IPv4 address is preferred unless the host
// is an IPv6 literal or only has IPv6 addresses. The request is retransmitted
// with doubling intervals (250 ms, 500 ms, 1 s, ...) until a response arrives
// or ctx ends; when ctx has no deadline, the whole call (resolution included)
// is bounded by 5 s.
// Datagrams that are not a Binding response to this transaction are ignored.
//
// The returned address is taken from XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS
// for servers that only speak RFC 3489. It is the source address of the
// ephemeral socket used for the probe: the IP is what matters, the port only
// says something about the NAT mapping of that one socket.
//
// A server that never answers in time gives an error that matches
// context.DeadlineExceeded with errors.Is; a cancelled ctx gives one that
// matches context.Canceled.
func Discover(ctx context.Context, server string) (netip.AddrPort, error) {
	budget := defaultTimeout
	if d, ok := ctx.Deadline(); ok {
		budget = max(time.Until(d).Round(time.Millisecond), 0)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}

	raddr, err := resolve(ctx, server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	conn, release, err := openSocket(ctx, server, raddr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer release()

	req, err := pion.Build(pion.TransactionID, pion.BindingRequest, pion.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stun: building the Binding request: %w", err)
	}
	deadline, _ := ctx.Deadline()
	tr := &transaction{conn: conn, server: server, req: req, deadline: deadline, budget: budget}
	return tr.run(ctx)
}

// openSocket opens a UDP socket connected to raddr: the kernel drops
// datagrams from anyone but the server, and reports ICMP errors. A blocked
// Read on it wakes as soon as ctx is done (cancellation is not a deadline
// the socket knows about). release closes the socket; it waits for the
// wake-up callback, so no goroutine outlives it.
func openSocket(ctx context.Context, server string, raddr netip.AddrPort) (conn *net.UDPConn, release func(), err error) {
	network := "udp4"
	if raddr.Addr().Is6() {
		network = "udp6"
	}
	conn, err = net.DialUDP(network, nil, net.UDPAddrFromAddrPort(raddr))
	if err != nil {
		return nil, nil, fmt.Errorf("stun: cannot open a UDP socket to %s: %w", server, err)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = conn.SetReadDeadline(time.Unix(1, 0))
	})
	release = func() {
		if !stop() {
			<-fired
		}
		_ = conn.Close()
	}
	return conn, release, nil
}

// transaction is one Binding request and its retransmissions, on a socket
// opened by openSocket with the same ctx.
type transaction struct {
	conn     *net.UDPConn
	server   string
	req      *pion.Message
	deadline time.Time     // ctx's deadline
	budget   time.Duration // the time the caller gave, for the timeout error
	buf      []byte
	res      pion.Message
	lastErr  error // last transient socket error (e.g. ICMP port unreachable)
}

// run sends the request with doubling retransmission timeouts until the
// answer arrives, a fatal error occurs or ctx ends.
func (t *transaction) run(ctx context.Context) (netip.AddrPort, error) {
	t.buf = make([]byte, readBufferSize)
	rto := initialRTO
	for {
		if err := ctx.Err(); err != nil {
			return t.fail(err)
		}
		if !time.Now().Before(t.deadline) {
			return t.fail(context.DeadlineExceeded)
		}
		if _, err := t.conn.Write(t.req.Raw); err != nil {
			if !transient(err) {
				return netip.AddrPort{}, fmt.Errorf("stun: sending to %s: %w", t.server, err)
			}
			t.lastErr = err
		}
		retransmitAt := time.Now().Add(rto)
		if retransmitAt.After(t.deadline) {
			retransmitAt = t.deadline
		}
		rto = min(2*rto, maxRTO)

		if addr, done, err := t.await(ctx, retransmitAt); done {
			return addr, err
		}
	}
}

// await reads datagrams until the answer arrives or a fatal error occurs
// (done), or until retransmitAt or the end of ctx (not done: run decides
// whether to retransmit or give up).
func (t *transaction) await(ctx context.Context, retransmitAt time.Time) (addr netip.AddrPort, done bool, err error) {
	for {
		if err := t.conn.SetReadDeadline(retransmitAt); err != nil {
			return netip.AddrPort{}, true, fmt.Errorf("stun: socket to %s: %w", t.server, err)
		}
		// Checked after arming the deadline: if ctx ended before, the
		// AfterFunc may have run already and its deadline was overwritten.
		if err := ctx.Err(); err != nil {
			addr, err := t.fail(err)
			return addr, true, err
		}
		n, err := t.conn.Read(t.buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return netip.AddrPort{}, false, nil
			}
			if transient(err) {
				t.lastErr = err
				continue
			}
			return netip.AddrPort{}, true, fmt.Errorf("stun: reading from %s: %w", t.server, err)
		}
		if addr, done, err := parseResponse(t.buf[:n], &t.res, t.req.TransactionID, t.server); done {
			return addr, true, err
		}
	}
}

// fail is the error for a transaction that ended with cause: a timeout when
// the deadline passed, an abort otherwise.
func (t *transaction) fail(cause error) (netip.AddrPort, error) {
	if errors.Is(cause, context.DeadlineExceeded) || !time.Now().Before(t.deadline) {
		return netip.AddrPort{}, &timeoutError{server: t.server, budget: t.budget, last: t.lastErr}
	}
	return netip.AddrPort{}, fmt.Errorf("stun: discovery via %s aborted: %w", t.server, cause)
}

// parseResponse decodes one datagram into res. done reports whether it
// was the Binding response to transaction id (successful or not); anything
// else (garbage, other transactions, other methods, requests, corrupted
// fingerprints) is not done and must be ignored by the caller.
func parseResponse(pkt []byte, res *pion.Message, id [pion.TransactionIDSize]byte, server string) (addr netip.AddrPort, done bool, err error) {
	if !pion.IsMessage(pkt) {
		return netip.AddrPort{}, false, nil
	}
	res.Raw = pkt // decoded in place: nothing of res outlives this call
	if res.Decode() != nil || res.TransactionID != id || res.Type.Method != pion.MethodBinding {
		return netip.AddrPort{}, false, nil
	}
	if res.Contains(pion.AttrFingerprint) && pion.Fingerprint.Check(res) != nil {
		return netip.AddrPort{}, false, nil
	}

	switch res.Type.Class {
	case pion.ClassSuccessResponse:
		var xor pion.XORMappedAddress
		err := xor.GetFrom(res)
		ip, port := xor.IP, xor.Port
		if errors.Is(err, pion.ErrAttributeNotFound) {
			var mapped pion.MappedAddress
			err = mapped.GetFrom(res)
			ip, port = mapped.IP, mapped.Port
		}
		if errors.Is(err, pion.ErrAttributeNotFound) {
			return netip.AddrPort{}, true, fmt.Errorf("stun: server %s answered without a mapped address", server)
		}
		if err != nil {
			return netip.AddrPort{}, true, fmt.Errorf("stun: server %s sent a malformed mapped address: %w", server, err)
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok || port <= 0 || port > 0xffff {
			return netip.AddrPort{}, true, fmt.Errorf("stun: server %s sent an invalid mapped address %v port %d", server, ip, port)
		}
		return netip.AddrPortFrom(a.Unmap(), uint16(port)), true, nil

	case pion.ClassErrorResponse:
		var ec pion.ErrorCodeAttribute
		if err := ec.GetFrom(res); err != nil {
			return netip.AddrPort{}, true, fmt.Errorf("stun: server %s answered with an error without a valid ERROR-CODE", server)
		}
		return netip.AddrPort{}, true, &errorResponse{server: server, code: int(ec.Code), reason: string(ec.Reason)}

	default: // a request or indication with our id: not an answer
		return netip.AddrPort{}, false, nil
	}
}

// resolve turns "host:port" into one UDP address, preferring IPv4.
func resolve(ctx context.Context, server string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(server)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stun: bad server address %q: %w", server, err)
	}
	if host == "" {
		return netip.AddrPort{}, fmt.Errorf("stun: bad server address %q: missing host", server)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("stun: bad server address %q: invalid port %q", server, portStr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stun: cannot resolve server %s: %w", server, err)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
		}
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("stun: cannot resolve server %s: no addresses", server)
	}
	return netip.AddrPortFrom(ips[0], uint16(port)), nil
}

// transient reports socket errors worth retransmitting through: ICMP
// feedback on a connected UDP socket (the server may be restarting, or a
// middlebox is noisy) rather than a broken socket.
func transient(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// timeoutError is returned when the server never answered in time. It
// matches context.DeadlineExceeded with errors.Is.
type timeoutError struct {
	server string
	budget time.Duration
	last   error
}

func (e *timeoutError) Error() string {
	msg := "stun: no response from " + e.server + " within " + e.budget.String()
	if e.last != nil {
		msg += " (last socket error: " + e.last.Error() + ")"
	}
	return msg
}

func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// errorResponse is a Binding error response from the server.
type errorResponse struct {
	server string
	code   int
	reason string
}

func (e *errorResponse) Error() string {
	return fmt.Sprintf("stun: server %s answered with an error: %d %s", e.server, e.code, e.reason)
}

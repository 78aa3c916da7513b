package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
)

const (
	// stunDefaultTimeout bounds DiscoverPublicIP when the context carries no
	// deadline of its own.
	stunDefaultTimeout = 5 * time.Second
	// stunInitialRTO is the first retransmission timeout (RFC 5389 §7.2.1
	// suggests 500 ms for unknown paths; a public IP probe on start-up wants
	// to be snappier, and the doubling keeps it polite).
	stunInitialRTO = 250 * time.Millisecond
	// stunMaxRTO caps the doubling so that a long context deadline still
	// sees regular retransmissions.
	stunMaxRTO = 4 * time.Second
	// stunReadBufferSize is large enough for any Binding response a sane
	// server sends over UDP (RFC 5389 §7.1 keeps messages below the path
	// MTU); longer datagrams are truncated and then fail to decode.
	stunReadBufferSize = 1500
)

// DiscoverPublicIP asks the STUN server at server ("host:port", e.g.
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
func DiscoverPublicIP(ctx context.Context, server string) (netip.AddrPort, error) {
	budget := stunDefaultTimeout
	if d, ok := ctx.Deadline(); ok {
		budget = max(time.Until(d).Round(time.Millisecond), 0)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, stunDefaultTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()

	raddr, err := stunResolve(ctx, server)
	if err != nil {
		return netip.AddrPort{}, err
	}

	network := "udp4"
	if raddr.Addr().Is6() {
		network = "udp6"
	}
	// A connected socket: the kernel drops datagrams from anyone but the
	// server, and reports ICMP errors.
	conn, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(raddr))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stun: cannot open a UDP socket to %s: %w", server, err)
	}
	// Wake a blocked Read as soon as ctx is done (cancellation is not a
	// deadline the socket knows about). The callback is waited for, so no
	// goroutine outlives this call.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-fired
		}
		_ = conn.Close()
	}()

	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stun: building the Binding request: %w", err)
	}

	var (
		buf     = make([]byte, stunReadBufferSize)
		res     = new(stun.Message)
		rto     = stunInitialRTO
		lastErr error // last transient socket error (e.g. ICMP port unreachable)
	)
	fail := func(cause error) (netip.AddrPort, error) {
		if errors.Is(cause, context.DeadlineExceeded) || !time.Now().Before(deadline) {
			return netip.AddrPort{}, &stunTimeoutError{server: server, budget: budget, last: lastErr}
		}
		return netip.AddrPort{}, fmt.Errorf("stun: discovery via %s aborted: %w", server, cause)
	}

	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if !time.Now().Before(deadline) {
			return fail(context.DeadlineExceeded)
		}
		if _, err := conn.Write(req.Raw); err != nil {
			if !stunTransient(err) {
				return netip.AddrPort{}, fmt.Errorf("stun: sending to %s: %w", server, err)
			}
			lastErr = err
		}
		retransmitAt := time.Now().Add(rto)
		if retransmitAt.After(deadline) {
			retransmitAt = deadline
		}
		rto = min(2*rto, stunMaxRTO)

		for {
			if err := conn.SetReadDeadline(retransmitAt); err != nil {
				return netip.AddrPort{}, fmt.Errorf("stun: socket to %s: %w", server, err)
			}
			// Checked after arming the deadline: if ctx ended before, the
			// AfterFunc may have run already and its deadline was overwritten.
			if err := ctx.Err(); err != nil {
				return fail(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // retransmit (or give up, checked at the top)
				}
				if stunTransient(err) {
					lastErr = err
					continue
				}
				return netip.AddrPort{}, fmt.Errorf("stun: reading from %s: %w", server, err)
			}
			addr, done, err := stunParseResponse(buf[:n], res, req.TransactionID, server)
			if done {
				return addr, err
			}
		}
	}
}

// stunParseResponse decodes one datagram into res. done reports whether it
// was the Binding response to transaction id (successful or not); anything
// else (garbage, other transactions, other methods, requests, corrupted
// fingerprints) is not done and must be ignored by the caller.
func stunParseResponse(pkt []byte, res *stun.Message, id [stun.TransactionIDSize]byte, server string) (addr netip.AddrPort, done bool, err error) {
	if !stun.IsMessage(pkt) {
		return netip.AddrPort{}, false, nil
	}
	res.Raw = pkt // decoded in place: nothing of res outlives this call
	if res.Decode() != nil || res.TransactionID != id || res.Type.Method != stun.MethodBinding {
		return netip.AddrPort{}, false, nil
	}
	if res.Contains(stun.AttrFingerprint) && stun.Fingerprint.Check(res) != nil {
		return netip.AddrPort{}, false, nil
	}

	switch res.Type.Class {
	case stun.ClassSuccessResponse:
		var xor stun.XORMappedAddress
		err := xor.GetFrom(res)
		ip, port := xor.IP, xor.Port
		if errors.Is(err, stun.ErrAttributeNotFound) {
			var mapped stun.MappedAddress
			err = mapped.GetFrom(res)
			ip, port = mapped.IP, mapped.Port
		}
		if errors.Is(err, stun.ErrAttributeNotFound) {
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

	case stun.ClassErrorResponse:
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(res); err != nil {
			return netip.AddrPort{}, true, fmt.Errorf("stun: server %s answered with an error without a valid ERROR-CODE", server)
		}
		return netip.AddrPort{}, true, &stunErrorResponse{server: server, code: int(ec.Code), reason: string(ec.Reason)}

	default: // a request or indication with our id: not an answer
		return netip.AddrPort{}, false, nil
	}
}

// stunResolve turns "host:port" into one UDP address, preferring IPv4.
func stunResolve(ctx context.Context, server string) (netip.AddrPort, error) {
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

// stunTransient reports socket errors worth retransmitting through: ICMP
// feedback on a connected UDP socket (the server may be restarting, or a
// middlebox is noisy) rather than a broken socket.
func stunTransient(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// stunTimeoutError is returned when the server never answered in time. It
// matches context.DeadlineExceeded with errors.Is.
type stunTimeoutError struct {
	server string
	budget time.Duration
	last   error
}

func (e *stunTimeoutError) Error() string {
	msg := "stun: no response from " + e.server + " within " + e.budget.String()
	if e.last != nil {
		msg += " (last socket error: " + e.last.Error() + ")"
	}
	return msg
}

func (e *stunTimeoutError) Unwrap() error { return context.DeadlineExceeded }

// stunErrorResponse is a Binding error response from the server.
type stunErrorResponse struct {
	server string
	code   int
	reason string
}

func (e *stunErrorResponse) Error() string {
	return fmt.Sprintf("stun: server %s answered with an error: %d %s", e.server, e.code, e.reason)
}

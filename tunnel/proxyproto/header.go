package proxyproto

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Header describes one proxied connection or datagram flow.
type Header struct {
	Source      netip.AddrPort // the client
	Destination netip.AddrPort // the address the client connected or sent to
}

// HeaderFor builds the header for a connection accepted by the edge:
// the client is the remote address, the destination the local one.
// IPv4-mapped IPv6 addresses are written as IPv4, and zones are dropped.
func HeaderFor(client, local net.Addr) (Header, error) {
	src, err := addrPortOf(client)
	if err != nil {
		return Header{}, err
	}
	dst, err := addrPortOf(local)
	if err != nil {
		return Header{}, err
	}
	return Header{Source: src, Destination: dst}, nil
}

func addrPortOf(a net.Addr) (netip.AddrPort, error) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}, fmt.Errorf("proxyproto: not an IP address with a port: %q", a.String())
		}
	}
	if !ap.Addr().IsValid() {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: not an IP address with a port: %q", a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), nil
}

// ErrBadHeader is wrapped by every error of ParseV1 and ParseV2.
var ErrBadHeader = errors.New("bad PROXY header")

// bad is the error of a rejected header: ErrBadHeader, the version and why.
func bad(version, why string) error {
	return fmt.Errorf("%w: %s: %s", ErrBadHeader, version, why)
}

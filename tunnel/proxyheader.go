package tunnel

import "github.com/serve-zone/remoteingress/tunnel/proxyproto"

// The PROXY protocol versions a hub can write to its TCP targets
// (HubConfig.ProxyProtocol). The OPEN frame always carries the v1 line:
// only what the hub writes to the target changes.
const (
	// ProxyProtocolV1 is the text header "PROXY TCP4 ...\r\n" (the default).
	ProxyProtocolV1 = "v1"
	// ProxyProtocolV2 is the binary v2 header: command PROXY, STREAM over
	// INET or INET6, no TLVs.
	ProxyProtocolV2 = "v2"
)

// maxProxyHeaderLen is the longest header appendProxyHeader writes.
const maxProxyHeaderLen = max(proxyproto.MaxV1Len, proxyproto.MaxV2Len)

// checkProxyProtocol checks HubConfig.ProxyProtocol.
func checkProxyProtocol(v string) error {
	if v != ProxyProtocolV1 && v != ProxyProtocolV2 {
		return configErr("ProxyProtocol", "must be %q or %q", ProxyProtocolV1, ProxyProtocolV2)
	}
	return nil
}

// appendProxyHeader appends the header the hub writes to a TCP target
// before any client byte, in the version the hub is configured for.
func (h *Hub) appendProxyHeader(dst []byte, hdr proxyproto.Header) []byte {
	if h.cfg.ProxyProtocol == ProxyProtocolV2 {
		return hdr.AppendV2(dst, proxyproto.Stream)
	}
	return hdr.AppendV1(dst)
}

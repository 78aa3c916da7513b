package tunnel

import (
	"net"
	"os"
	"sync"
)

// quicSocketBuffer is the UDP buffer size QUIC asks for on both sides
// (what quic-go wants: 7 MiB).
const quicSocketBuffer = 7 << 20

// bufferWarning says once per process that the kernel capped the UDP buffers.
var bufferWarning sync.Once

func init() {
	// quic-go would print its own warning with the standard logger; ours
	// goes through the engine's logger (quicBuffers).
	if os.Getenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING") == "" {
		_ = os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	}
}

// listenQUICSocket binds the UDP socket of a QUIC transport.
func listenQUICSocket(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", ua)
}

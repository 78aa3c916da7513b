//go:build !linux

package tunnel

import (
	"log/slog"
	"net"
)

// quicBuffers asks for QUIC's UDP buffer sizes (where the kernel allows).
func quicBuffers(pc *net.UDPConn, _ *slog.Logger) {
	_ = pc.SetReadBuffer(quicSocketBuffer)
	_ = pc.SetWriteBuffer(quicSocketBuffer)
}

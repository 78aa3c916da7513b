package tunnel

import (
	"log/slog"
	"net"
	"syscall"
)

// quicBuffers sizes pc's buffers for QUIC (as root beyond the kernel's
// maximum) and, when the kernel keeps them smaller, logs once what to set.
// QUIC works either way; small buffers lose packets at high rates.
func quicBuffers(pc *net.UDPConn, log *slog.Logger) {
	_ = pc.SetReadBuffer(quicSocketBuffer)
	_ = pc.SetWriteBuffer(quicSocketBuffer)
	rc, err := pc.SyscallConn()
	if err != nil {
		return
	}
	var rcv, snd int
	_ = rc.Control(func(fd uintptr) {
		rcv, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		if rcv < quicSocketBuffer {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, quicSocketBuffer)
			rcv, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		}
		snd, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		if snd < quicSocketBuffer {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, quicSocketBuffer)
			snd, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		}
	})
	// Linux reports twice the size set (the kernel's bookkeeping).
	if rcv > 0 && rcv < quicSocketBuffer || snd > 0 && snd < quicSocketBuffer {
		bufferWarning.Do(func() {
			log.Warn("the kernel keeps QUIC's UDP buffers small; QUIC works but may lose packets at high rates: "+
				"run sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000 (as root) to allow 7 MiB",
				"receiveBufferKiB", rcv/1024, "sendBufferKiB", snd/1024)
		})
	}
}

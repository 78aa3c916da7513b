package tunnel

import (
	"bufio"
	"io"
	"net"
	"syscall"
	"testing"
)

// BenchmarkTunnelThroughput moves bytes client→target through an in-process
// hub and edge (TLS, framing, flow control, PROXY header) on loopback.
func BenchmarkTunnelThroughput(b *testing.B) {
	r := startRig(b, rigOptions{handler: func(_ string, c net.Conn, br *bufio.Reader) {
		io.Copy(io.Discard, br)
		c.(*net.TCPConn).CloseWrite()
	}})
	c, err := net.Dial("tcp", r.edgeAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
	// CPU time per MB is steadier than MB/s on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/(float64(b.N)*float64(len(buf))/(1<<20)), "cpu-ns/MB")
}

// cpuTime is the user+system CPU time of this process in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkTunnelRoundTrip measures 64-byte request/response latency over one stream.
func BenchmarkTunnelRoundTrip(b *testing.B) {
	r := startRig(b, rigOptions{})
	c, err := net.Dial("tcp", r.edgeAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
}

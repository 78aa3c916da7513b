package tunnel

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"testing"
)

// The edge's port reader takes what the kernel holds, several datagrams per
// read where it can (Linux on amd64 and arm64), each whole, with its own
// source and destination, the largest UDP datagram and an empty one too.
func TestPortReaderReadsBatches(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetReadBuffer(4 << 20)
	_, pktinfo := enablePktinfo(pc)
	var clients []*net.UDPConn
	for i := 0; i < 3; i++ {
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	type sent struct {
		from netip.AddrPort
		p    []byte
	}
	var want []sent
	sizes := []int{1, 1200, MaxDatagram, 0, 64, 9000}
	for i := 0; i < 40; i++ {
		c := clients[i%len(clients)]
		p := bytes.Repeat([]byte{byte(i)}, sizes[i%len(sizes)])
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, sent{c.LocalAddr().(*net.UDPAddr).AddrPort(), p})
	}
	r := newPortReader(pc, pktinfo)
	most := 0
	for got := 0; got < len(want); {
		n, err := r.read()
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, n)
		for i := 0; i < n; i++ {
			b, from, oob := r.msg(i)
			w := want[got]
			if from != w.from || !bytes.Equal(b, w.p) {
				t.Fatalf("datagram %d: %d bytes from %v, want %d from %v", got, len(b), from, len(w.p), w.from)
			}
			if pktinfo {
				if dst := parsePktinfo(oob); dst != netip.MustParseAddr("127.0.0.1") {
					t.Fatalf("datagram %d: destination %v", got, dst)
				}
			}
			got++
		}
	}
	if batched := runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64"); batched && most < 2 {
		t.Fatalf("40 datagrams waiting, but no read took more than %d", most)
	}
}

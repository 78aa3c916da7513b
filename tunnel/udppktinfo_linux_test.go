package tunnel

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// The kernel reports each datagram's destination, and a reply sent with
// that address as its pktinfo source reaches a client connected to it.
func TestPktinfoDestinationAndReplySource(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Skipf("cannot bind %s: %v", host, err)
			}
			defer pc.Close()
			uc := pc.(*net.UDPConn)
			v6, ok := enablePktinfo(uc)
			if !ok || v6 != (host == "::1") {
				t.Fatalf("enablePktinfo = v6 %v, ok %v", v6, ok)
			}
			c, err := net.DialUDP("udp", nil, uc.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("hi"))
			buf, oob := make([]byte, 16), make([]byte, pktinfoOOB)
			uc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, oobn, _, from, err := uc.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				t.Fatal(err)
			}
			dst := parsePktinfo(oob[:oobn])
			if want := netip.MustParseAddr(host); dst != want {
				t.Fatalf("destination %v, want %v", dst, want)
			}
			if _, _, err := uc.WriteMsgUDPAddrPort([]byte("back"), appendPktinfoSrc(nil, dst, v6), from); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "back" {
				t.Fatalf("reply %q, %v", buf[:n], err)
			}
		})
	}
	if parsePktinfo([]byte{1, 2, 3}).IsValid() || parsePktinfo(make([]byte, 64)).IsValid() {
		t.Fatal("garbage parsed as pktinfo")
	}
}

package tunnel

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// Close returns while QUIC handshakes are in flight: quic-go's listener
// waits for them as it closes, and they call back into the hub.
func TestHubCloseDuringQUICHandshakes(t *testing.T) {
	for round := 0; round < 10; round++ {
		hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", Logger: testLogger(t)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := net.ResolveUDPAddr("udp", fmt.Sprintf("127.0.0.1:%d", hub.QUICPort()))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for i := 0; i < 20; i++ {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			d := &deafConn{PacketConn: pc, closed: make(chan struct{})}
			defer d.Close()
			go quic.Dial(ctx, d, addr, quicTLSConfig(edgeTLSConfig("127.0.0.1")), quicConfig(DefaultTuning(), false))
		}
		time.Sleep(20 * time.Millisecond) // the Initials reach the hub
		done := make(chan struct{})
		go func() { hub.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Close did not return with QUIC handshakes in flight", round)
		}
		cancel()
	}
}

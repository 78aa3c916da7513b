package tunnel

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// Each hostile frame sequence from an authenticated edge is a protocol error
// that closes that tunnel only, with a reason naming it; the genuine edge's
// traffic keeps flowing and the process keeps serving.
func TestHostileFramesCloseOnlyThatTunnel(t *testing.T) {
	r := startRig(t, rigOptions{})
	if err := r.hub.SetAllowedEdges([]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1"}, {ID: "evil", Secret: "e"}}); err != nil {
		t.Fatal(err)
	}
	frame := func(id uint32, t frameType, p []byte) []byte { return appendFrame(nil, id, t, p) }
	holdTarget := startTarget(t, func(_ string, c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	open := []byte(fmt.Sprintf("PROXY TCP4 198.51.100.7 127.0.0.1 4242 %d\r\n", holdTarget.port))
	// A target that never reads: once the kernel's buffers are full, nothing
	// is credited back, and a sender that goes on overruns the window.
	stuck := make(chan struct{})
	defer close(stuck)
	stuckTarget := startTarget(t, func(_ string, c net.Conn, br *bufio.Reader) { <-stuck })
	openStuck := []byte(fmt.Sprintf("PROXY TCP4 198.51.100.7 127.0.0.1 4242 %d\r\n", stuckTarget.port))
	flood := frame(1, frameOpen, openStuck)
	for i := 0; i < 40; i++ {
		flood = append(flood, frame(1, frameData, make([]byte, 1<<20))...)
	}
	header := func(id uint32, t frameType, length uint32) []byte {
		b := make([]byte, headerLen)
		putHeader(b, frameHeader{StreamID: id, Type: t, Length: length})
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	flowBlk := appendFlowOpen(nil, proxyproto.Header{Source: netip.MustParseAddrPort("198.51.100.7:4242"),
		Destination: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(holdTarget.port))})
	cases := []struct {
		name, wire, reason string
	}{
		{"absurd length", string(header(1, frameData, 0xFFFFFFFF)), "exceeds the limit"},
		{"length above any window", string(header(1, frameData, 8<<20)), "exceeds the limit"},
		{"DATA larger than the stream's window", string(cat(frame(1, frameOpen, openStuck), header(1, frameData, DefaultWindow+1))), "overran its window"},
		{"BLOCKED with a payload", string(cat(frame(1, frameOpen, open), frame(1, frameBlocked, []byte("x")))), "BLOCKED with a payload"},
		{"unknown type", string(header(1, 0x42, 0)), "unknown frame type"},
		{"DATA for a stream never opened", string(frame(9, frameData, []byte("x"))), "never opened"},
		// The stuck target keeps the stream alive, so the late DATA finds it.
		{"DATA after CLOSE", string(cat(frame(1, frameOpen, openStuck), frame(1, frameClose, nil), frame(1, frameData, []byte("late")))), "after its close"},
		{"duplicate OPEN", string(cat(frame(1, frameOpen, open), frame(1, frameOpen, open))), "not above the last opened"},
		{"OPEN with a bad PROXY header", string(frame(1, frameOpen, []byte("PROXY TCP4 nonsense\r\n"))), "PROXY"},
		{"OPEN on stream 0", string(frame(0, frameOpen, open)), "on stream 0"},
		{"hub-to-edge frame from an edge", string(cat(frame(1, frameOpen, open), frame(1, frameDataBack, []byte("x")))), "unexpected DATA_BACK"},
		{"window overrun", string(flood), "overran its window"},
		{"PING of the wrong size", string(frame(0, framePing, []byte("abc"))), "PING with 3 bytes"},
		{"zero window update", string(cat(frame(1, frameOpen, open), frame(1, frameWindowUpdate, make([]byte, 4)))), "zero window update"},
		{"handshake frame after authentication", string(frame(0, frameHello, []byte("x"))), "HELLO on stream 0"},
		{"UDP_DATA for a flow never opened", string(frame(1, frameUDPData, []byte("x"))), "UDP_DATA for flow 1, which was never opened"},
		{"UDP_CLOSE for a flow never opened", string(frame(3, frameUDPClose, nil)), "UDP_CLOSE for flow 3, which was never opened"},
		{"oversized UDP_DATA", string(cat(frame(1, frameUDPOpen, flowBlk), header(1, frameUDPData, MaxDatagram+1))), "UDP_DATA of 65508 bytes"},
		{"reused flow id", string(cat(frame(1, frameUDPOpen, flowBlk), frame(1, frameUDPOpen, flowBlk))), "not above the last opened"},
		{"flow ids out of order", string(cat(frame(5, frameUDPOpen, flowBlk), frame(3, frameUDPOpen, flowBlk))), "UDP_OPEN for flow 3, not above the last opened 5"},
		{"malformed flow address block", string(frame(1, frameUDPOpen, []byte{5, 1, 2})), "address family"},
		{"flow address block of the wrong length", string(frame(1, frameUDPOpen, flowBlk[:len(flowBlk)-1])), "wrong length"},
		{"UDP_CLOSE with a payload", string(cat(frame(1, frameUDPOpen, flowBlk), frame(1, frameUDPClose, []byte("x")))), "UDP_CLOSE with a payload"},
		{"UDP_OPEN for flow 0", string(frame(0, frameUDPOpen, flowBlk)), "for flow 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from := len(r.hubEvents.snapshot())
			raw := rawEdge(t, r.hub.Port(), "evil", "e")
			go raw.Write([]byte(tc.wire)) // may fail once the hub has had enough
			// The hub ends an earlier tunnel of the same id before it
			// registers this one, so the next disconnect is this tunnel's.
			_, idx := r.hubEvents.wait(t, from, 5*time.Second, func(e Event) bool {
				d, ok := e.Data.(EdgeEvent)
				return ok && e.Name == EventEdgeConnected && d.EdgeID == "evil"
			})
			ev, _ := r.hubEvents.wait(t, idx+1, 5*time.Second, func(e Event) bool {
				d, ok := e.Data.(EdgeDisconnectedEvent)
				return ok && d.EdgeID == "evil"
			})
			reason := ev.Data.(EdgeDisconnectedEvent).Reason
			if !strings.Contains(reason, "protocol error") || !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason = %q, want a protocol error mentioning %q", reason, tc.reason)
			}
			// The peer is told why, then the connection ends.
			raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			fr := newFrameReader(raw)
			var goaway string
			for {
				h, p, err := fr.ReadFrame()
				if err != nil {
					break
				}
				if h.Type == frameGoAway {
					goaway = string(p)
				}
			}
			if !strings.Contains(goaway, "protocol error") {
				t.Fatalf("GOAWAY = %q", goaway)
			}
			c := r.dial(t)
			c.Write([]byte("still fine"))
			c.CloseWrite()
			if got, _ := io.ReadAll(c); string(got) != "still fine" {
				t.Fatalf("the genuine edge was disturbed: got %q", got)
			}
		})
	}
	if n := len(r.hub.Status().ConnectedEdges); n != 1 {
		t.Fatalf("%d edges connected at the end, want the genuine one", n)
	}
}

package tunnel

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

func TestFlowOpenRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		n        int
	}{
		{"203.0.113.7:51234", "198.51.100.1:3478", flowOpenLen4},
		{"[::ffff:203.0.113.7]:1", "198.51.100.1:53", flowOpenLen4},
		{"[2001:db8::1]:65535", "[2001:db8::2]:443", flowOpenLen6},
		{"203.0.113.7:1", "[2001:db8::2]:443", flowOpenLen6},
	} {
		h := proxyproto.Header{Source: netip.MustParseAddrPort(tc.src), Destination: netip.MustParseAddrPort(tc.dst)}
		b := appendFlowOpen(nil, h)
		if len(b) != tc.n {
			t.Fatalf("%v: %d bytes, want %d", h, len(b), tc.n)
		}
		got, err := parseFlowOpen(b)
		if err != nil {
			t.Fatalf("%v: %v", h, err)
		}
		if got.Source.Addr().Unmap() != h.Source.Addr().Unmap() || got.Source.Port() != h.Source.Port() ||
			got.Destination.Addr().Unmap() != h.Destination.Addr().Unmap() || got.Destination.Port() != h.Destination.Port() {
			t.Fatalf("%v came back as %v", h, got)
		}
	}
	for name, b := range map[string][]byte{
		"empty": nil, "family 5": {5}, "short v4": make([]byte, flowOpenLen4-1), "v6 length for v4": append([]byte{4}, make([]byte, flowOpenLen6-1)...),
		"port 0": append([]byte{4}, make([]byte, flowOpenLen4-1)...),
	} {
		if len(b) > 0 && b[0] == 0 {
			b[0] = 4
		}
		if _, err := parseFlowOpen(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseFlowOpen(f *testing.F) {
	f.Add(appendFlowOpen(nil, proxyproto.Header{Source: netip.MustParseAddrPort("203.0.113.7:51234"), Destination: netip.MustParseAddrPort("198.51.100.1:3478")}))
	f.Add(appendFlowOpen(nil, proxyproto.Header{Source: netip.MustParseAddrPort("[2001:db8::1]:1"), Destination: netip.MustParseAddrPort("[2001:db8::2]:2")}))
	f.Add([]byte{6, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseFlowOpen(b)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes.
		if again := appendFlowOpen(nil, h); string(again) != string(b) {
			// A v6 block of two IPv4-mapped addresses re-encodes as v4.
			if !(b[0] == 6 && h.Source.Addr().Is4In6() && h.Destination.Addr().Is4In6()) {
				t.Fatalf("% x parsed as %v, re-encoded as % x", b, h, again)
			}
		}
		if h.Destination.Port() == 0 {
			t.Fatal("destination port 0 accepted")
		}
	})
}

// fuzzConn is a connection that reads a fuzz input and discards writes.
type fuzzConn struct{ r *bytes.Reader }

func (c *fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// The hub's reader of flow frames, on any input: no panic, flows opened in
// increasing id order, data and closes only for ids opened, no datagram
// over the limit.
func FuzzFlowFrames(f *testing.F) {
	blk := appendFlowOpen(nil, proxyproto.Header{Source: netip.MustParseAddrPort("198.51.100.7:4242"), Destination: netip.MustParseAddrPort("127.0.0.1:53")})
	f.Add(appendFrame(appendFrame(appendFrame(nil, 1, frameUDPOpen, blk), 1, frameUDPData, []byte("q")), 1, frameUDPClose, nil))
	f.Add(appendFrame(appendFrame(nil, 3, frameUDPOpen, blk), 2, frameUDPOpen, blk))
	f.Add(appendFrame(nil, 9, frameUDPData, []byte("x")))
	f.Fuzz(func(t *testing.T, in []byte) {
		var maxID uint32
		check := func(what string, id uint32) {
			if id == 0 || id > maxID {
				t.Fatalf("%s for flow %d, last opened %d", what, id, maxID)
			}
		}
		h := &flowHandler{
			opened: func(id uint32, hdr proxyproto.Header) {
				if id <= maxID || hdr.Destination.Port() == 0 {
					t.Fatalf("flow %d opened after %d, header %v", id, maxID, hdr)
				}
				maxID = id
			},
			data: func(id uint32, p []byte) {
				check("data", id)
				if len(p) > MaxDatagram {
					t.Fatalf("datagram of %d bytes", len(p))
				}
			},
			closed: func(id uint32) { check("close", id) },
		}
		s := newSession(&fuzzConn{r: bytes.NewReader(in)}, true, DefaultTuning(), peerParams{window: DefaultWindow, caps: ourCaps}, discardLogger(), sessionHooks{})
		_ = s.Serve(&streamHandler{flows: h})
	})
}

// The hub's target for UDP flows: an IP at once, a name looked up once and
// then served from the cache while it is refreshed in the background.
func TestUDPTargetResolver(t *testing.T) {
	var r targetResolver
	if ip, err := r.resolve("127.0.0.2"); err != nil || ip != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("literal: %v %v", ip, err)
	}
	ip, err := r.resolve("localhost")
	if err != nil {
		t.Skipf("localhost does not resolve here: %v", err)
	}
	if !ip.IsLoopback() {
		t.Fatalf("localhost resolved to %v", ip)
	}
	r.mu.Lock()
	r.at = time.Now().Add(-2 * udpTargetTTL) // stale: served, and refreshed behind
	r.mu.Unlock()
	if again, err := r.resolve("localhost"); err != nil || again != ip {
		t.Fatalf("stale entry: %v %v", again, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		fresh := time.Since(r.at) < udpTargetTTL && !r.refreshing
		r.mu.Unlock()
		if fresh {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stale entry was not refreshed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

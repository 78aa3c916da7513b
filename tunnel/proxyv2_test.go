package tunnel

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	pires "github.com/pires/go-proxyproto"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

func TestProxyProtocolConfig(t *testing.T) {
	if c := DefaultHubConfig(); c.ProxyProtocol != ProxyProtocolV1 {
		t.Errorf("DefaultHubConfig().ProxyProtocol = %q, want %q", c.ProxyProtocol, ProxyProtocolV1)
	}
	if c := (HubConfig{}).withDefaults(); c.ProxyProtocol != ProxyProtocolV1 {
		t.Errorf("zero ProxyProtocol takes %q, want %q", c.ProxyProtocol, ProxyProtocolV1)
	}
	for _, v := range []string{"v1", "v2"} {
		c := DefaultHubConfig()
		c.ProxyProtocol = v
		if err := c.Validate(); err != nil {
			t.Errorf("ProxyProtocol %q: %v", v, err)
		}
	}
	for _, v := range []string{"V2", "2", "v3", "none", " v1"} {
		c := DefaultHubConfig()
		c.ProxyProtocol = v
		var ce *ConfigError
		if err := c.Validate(); !errors.As(err, &ce) || ce.Field != "ProxyProtocol" || ce.Msg != `must be "v1" or "v2"` {
			t.Errorf("ProxyProtocol %q: %v, want a ProxyProtocol error", v, err)
		}
	}
	// StartHub refuses it before binding anything.
	var ce *ConfigError
	if _, err := StartHub(HubConfig{ListenHost: "127.0.0.1", ProxyProtocol: "v9"}, nil); !errors.As(err, &ce) || ce.Field != "ProxyProtocol" {
		t.Errorf("StartHub with ProxyProtocol v9: %v", err)
	}
}

// v2Seen is what a v2 target read from one connection.
type v2Seen struct {
	hdr  *pires.Header
	rest []byte
	err  error
}

// startV2Target starts a target on 127.0.0.2 that parses a PROXY v2 header
// with github.com/pires/go-proxyproto, then reads the rest of the stream
// from the same reader and answers "ok".
func startV2Target(t *testing.T) (port int, seen <-chan v2Seen) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("target listen: %v", err)
	}
	ch := make(chan v2Seen, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				hdr, err := pires.Read(br)
				if err != nil {
					ch <- v2Seen{err: err}
					return
				}
				rest, err := io.ReadAll(br)
				ch <- v2Seen{hdr: hdr, rest: rest, err: err}
				_, _ = c.Write([]byte("ok"))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port, ch
}

// startV2Pair starts a hub with ProxyProtocol v2 in front of a v2 target,
// and an edge listening on listenHost at the target's port.
func startV2Pair(t *testing.T, listenHost string) (edgeAddr string, seen <-chan v2Seen) {
	t.Helper()
	port, seen := startV2Target(t)
	hubEvents, edgeEvents := newEventLog(), newEventLog()
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2", ProxyProtocol: ProxyProtocolV2,
		Logger: testLogger(t).With("t", "hub"), Events: hubEvents.sink},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret-edge-1"}})
	if err != nil {
		t.Fatalf("StartHub: %v", err)
	}
	t.Cleanup(func() { hub.Close() })
	if st := hub.Status(); st.ProxyProtocol != ProxyProtocolV2 {
		t.Errorf("hub status proxyProtocol = %q, want v2", st.ProxyProtocol)
	}
	edge, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: hub.Port(), EdgeID: "edge-1", Secret: "s3cret-edge-1",
		ListenHost: listenHost, ListenPorts: []int{port}, StunInterval: -1,
		Logger: testLogger(t).With("t", "edge"), Events: edgeEvents.sink})
	if err != nil {
		t.Fatalf("StartEdge: %v", err)
	}
	t.Cleanup(func() { edge.Close() })
	edgeEvents.wait(t, 0, 10*time.Second, named(EventTunnelConnected))
	hubEvents.wait(t, 0, 10*time.Second, named(EventEdgeConnected))
	return net.JoinHostPort(listenHost, strconv.Itoa(port)), seen
}

// With proxyProtocol v2 the target reads a binary v2 header (PROXY,
// STREAM over INET or INET6) with the client's address and the address it
// connected to, and then the client's bytes, unchanged, in the same stream.
func TestProxyProtocolV2ToTarget(t *testing.T) {
	for _, tc := range []struct {
		name, host string
		family     pires.AddressFamilyAndProtocol
	}{
		{"IPv4", "127.0.0.1", pires.TCPv4},
		{"IPv6", "::1", pires.TCPv6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.host == "::1" {
				ln, err := net.Listen("tcp", "[::1]:0")
				if err != nil {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				ln.Close()
			}
			edgeAddr, seen := startV2Pair(t, tc.host)
			c, err := net.Dial("tcp", edgeAddr)
			if err != nil {
				t.Fatalf("dial edge: %v", err)
			}
			defer c.Close()
			// Bytes that look like a header of their own must pass unchanged.
			msg := []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n\r\n\r\n\x00\r\nQUIT\nclient bytes \x00\xff")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			_ = c.(*net.TCPConn).CloseWrite()
			var got v2Seen
			select {
			case got = <-seen:
			case <-time.After(15 * time.Second):
				t.Fatal("the target saw no connection")
			}
			if got.err != nil {
				t.Fatalf("target: %v", got.err)
			}
			h := got.hdr
			if h.Version != 2 || h.Command != pires.PROXY || h.TransportProtocol != tc.family {
				t.Fatalf("header version %d command %#x family %#x, want 2 PROXY %#x", h.Version, h.Command, h.TransportProtocol, tc.family)
			}
			src, dst := h.SourceAddr.(*net.TCPAddr).AddrPort(), h.DestinationAddr.(*net.TCPAddr).AddrPort()
			wantSrc := netip.MustParseAddrPort(c.LocalAddr().String())
			wantDst := netip.MustParseAddrPort(c.RemoteAddr().String())
			if src.Addr().Unmap() != wantSrc.Addr() || src.Port() != wantSrc.Port() || dst.Addr().Unmap() != wantDst.Addr() || dst.Port() != wantDst.Port() {
				t.Fatalf("header %v -> %v, want %v -> %v", src, dst, wantSrc, wantDst)
			}
			if string(got.rest) != string(msg) {
				t.Fatalf("after the header the target read %q, want %q", got.rest, msg)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if reply, err := io.ReadAll(c); err != nil || string(reply) != "ok" {
				t.Fatalf("reply %q, %v", reply, err)
			}
		})
	}
}

// The hub writes the header of its version for the same stream header.
func TestAppendProxyHeaderVersions(t *testing.T) {
	hdr := proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.1:4000"), Destination: netip.MustParseAddrPort("198.51.100.2:443")}
	v1 := (&Hub{cfg: HubConfig{ProxyProtocol: ProxyProtocolV1}}).appendProxyHeader(nil, hdr)
	if string(v1) != "PROXY TCP4 192.0.2.1 198.51.100.2 4000 443\r\n" {
		t.Errorf("v1 header %q", v1)
	}
	v2 := (&Hub{cfg: HubConfig{ProxyProtocol: ProxyProtocolV2}}).appendProxyHeader(nil, hdr)
	want := "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\x0f\xa0\x01\xbb"
	if string(v2) != want {
		t.Errorf("v2 header % x, want % x", v2, want)
	}
	if len(v2) > maxProxyHeaderLen || len(v1) > maxProxyHeaderLen {
		t.Errorf("headers longer than maxProxyHeaderLen %d", maxProxyHeaderLen)
	}
}

package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	authEdgeID     = "edge-1"
	authSecret     = "s3cret-AUTH-TEST-7f1d9c"  // the edge's (right) secret
	authWrongSec   = "wr0ng-AUTH-TEST-11aa22bb" // another secret
	authHubWindow  = 262144
	authEdgeWindow = 131072
	authIOTimeout  = 20 * time.Second // only a guard against hangs
)

// authSecrets are every secret used by this file; none may appear in an error.
var authSecrets = []string{authSecret, authWrongSec, "\x00unknown"}

func authNoSecretIn(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, s := range authSecrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error text %q contains a secret", err.Error())
			}
		}
	}
}

var (
	authCertOnce sync.Once
	authCert     tls.Certificate
	authCertErr  error
)

// authHubCert is a generated hub certificate shared by the tests.
func authHubCert(t *testing.T) tls.Certificate {
	t.Helper()
	authCertOnce.Do(func() { authCert, authCertErr = hubCertificate("", "") })
	if authCertErr != nil {
		t.Fatalf("hubCertificate: %v", authCertErr)
	}
	return authCert
}

// authTCPPair returns both ends of a TCP connection on 127.0.0.1.
func authTCPPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	r := <-ch
	if r.err != nil {
		client.Close()
		t.Fatalf("accept: %v", r.err)
	}
	server = r.c
	deadline := time.Now().Add(authIOTimeout)
	for _, c := range []net.Conn{server, client} {
		c.SetDeadline(deadline)
		t.Cleanup(func() { c.Close() })
	}
	return server, client
}

// authTLSHandshake completes the TLS handshake on both ends concurrently.
func authTLSHandshake(t *testing.T, server, client *tls.Conn) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client TLS handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server TLS handshake: %v", err)
	}
}

// authTLSPair is a hub and an edge TLS connection, handshaken, over loopback.
func authTLSPair(t *testing.T, hubConf, edgeConf *tls.Config) (hub, edge *tls.Conn) {
	t.Helper()
	s, c := authTCPPair(t)
	if hubConf == nil {
		hubConf = hubTLSConfig(authHubCert(t))
	}
	if edgeConf == nil {
		edgeConf = edgeTLSConfig("127.0.0.1")
	}
	hub, edge = tls.Server(s, hubConf), tls.Client(c, edgeConf)
	authTLSHandshake(t, hub, edge)
	return hub, edge
}

func authLookup(m map[string]string) func(string) (string, bool) {
	return func(id string) (string, bool) {
		s, ok := m[id]
		return s, ok
	}
}

type authOutcome struct {
	hub      hubAuthResult
	hubErr   error
	edgePeer peerParams
	edgeErr  error
}

// authRun runs hubSide and edgeSide on the two connections at the same time;
// each side closes its connection when it returns, so that the other one
// never waits for a frame that cannot come.
func authRun(hubC, edgeC *tls.Conn, hubSide func(*tls.Conn) error, edgeSide func(*tls.Conn) error) (hubErr, edgeErr error) {
	done := make(chan error, 1)
	go func() {
		err := hubSide(hubC)
		hubC.Close()
		done <- err
	}()
	edgeErr = edgeSide(edgeC)
	edgeC.Close()
	return <-done, edgeErr
}

func authFullHandshake(t *testing.T, hubC, edgeC *tls.Conn, edgeID, edgeSecret string, lookup func(string) (string, bool)) authOutcome {
	t.Helper()
	var o authOutcome
	o.hubErr, o.edgeErr = authRun(hubC, edgeC,
		func(c *tls.Conn) (err error) { o.hub, err = hubHandshake(c, authHubWindow, lookup, nil); return err },
		func(c *tls.Conn) (err error) {
			o.edgePeer, err = edgeHandshake(c, edgeID, edgeSecret, authEdgeWindow, setPlace{Size: 1}, ourCaps)
			return err
		})
	authNoSecretIn(t, o.hubErr, o.edgeErr)
	return o
}

func TestHandshakeSucceeds(t *testing.T) {
	tls12 := edgeTLSConfig("127.0.0.1")
	tls12.MaxVersion = tls.VersionTLS12
	for _, tc := range []struct {
		name     string
		edgeConf *tls.Config
		version  uint16
	}{
		{"TLS1.3", nil, tls.VersionTLS13},
		{"TLS1.2", tls12, tls.VersionTLS12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hubC, edgeC := authTLSPair(t, nil, tc.edgeConf)
			for side, c := range map[string]*tls.Conn{"hub": hubC, "edge": edgeC} {
				cs := c.ConnectionState()
				if cs.Version != tc.version || cs.NegotiatedProtocol != alpnProto {
					t.Fatalf("%s: TLS version %#x ALPN %q, want %#x %q", side, cs.Version, cs.NegotiatedProtocol, tc.version, alpnProto)
				}
			}
			// Both ends of one TLS session derive the same exporter value.
			he, err1 := tlsExporter(hubC)
			ee, err2 := tlsExporter(edgeC)
			if err1 != nil || err2 != nil || !bytes.Equal(he, ee) || len(he) != 32 {
				t.Fatalf("exporters %x (%v) and %x (%v) differ", he, err1, ee, err2)
			}

			o := authFullHandshake(t, hubC, edgeC, authEdgeID, authSecret,
				authLookup(map[string]string{authEdgeID: authSecret, "edge-2": authWrongSec}))
			if o.hubErr != nil || o.edgeErr != nil {
				t.Fatalf("hub error %v, edge error %v", o.hubErr, o.edgeErr)
			}
			want := hubAuthResult{edgeID: authEdgeID, peer: peerParams{window: authEdgeWindow, caps: ourCaps}, set: setPlace{Size: 1}}
			if diff := cmp.Diff(want, o.hub, cmp.AllowUnexported(hubAuthResult{}, peerParams{})); diff != "" {
				t.Errorf("hub result (-want +got):\n%s", diff)
			}
			if want := (peerParams{window: authHubWindow, caps: ourCaps}); o.edgePeer != want {
				t.Errorf("edge learned %+v, want the hub's %+v", o.edgePeer, want)
			}
		})
	}
}

// TestHandshakeRejected covers the hub refusing the edge: the hub's error
// says why, the edge only learns "authentication failed".
func TestHandshakeRejected(t *testing.T) {
	tests := []struct {
		name       string
		edgeID     string
		edgeSecret string
		hubKnows   map[string]string
		hubWhy     string
	}{
		{"wrong secret", authEdgeID, authWrongSec, map[string]string{authEdgeID: authSecret}, "wrong secret"},
		{"hub has a different secret for the id", authEdgeID, authSecret, map[string]string{authEdgeID: authWrongSec}, "wrong secret"},
		{"empty secret", authEdgeID, "", map[string]string{authEdgeID: authSecret}, "wrong secret"},
		{"unknown edge id", "edge-unknown", authSecret, map[string]string{authEdgeID: authSecret}, "unknown edge id"},
		{"unknown id with the placeholder secret", "edge-unknown", "\x00unknown", map[string]string{authEdgeID: authSecret}, "unknown edge id"},
		{"id differs in case", "EDGE-1", authSecret, map[string]string{authEdgeID: authSecret}, "unknown edge id"},
		{"no edges configured", authEdgeID, authSecret, map[string]string{}, "unknown edge id"},
	}
	var edgeTexts []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hubC, edgeC := authTLSPair(t, nil, nil)
			o := authFullHandshake(t, hubC, edgeC, tc.edgeID, tc.edgeSecret, authLookup(tc.hubKnows))

			if !errors.Is(o.hubErr, ErrAuthFailed) || !strings.Contains(o.hubErr.Error(), tc.hubWhy) {
				t.Errorf("hub error = %v, want ErrAuthFailed mentioning %q", o.hubErr, tc.hubWhy)
			}
			if o.hubErr != nil && !strings.Contains(o.hubErr.Error(), tc.edgeID) {
				t.Errorf("hub error %q does not name the edge %q", o.hubErr, tc.edgeID)
			}
			if o.hub.peer.window != 0 {
				t.Errorf("hub returned a window %d for a rejected edge", o.hub.peer.window)
			}

			var rc *remoteCloseError
			if !errors.As(o.edgeErr, &rc) {
				t.Fatalf("edge error = %v (%T), want a *remoteCloseError", o.edgeErr, o.edgeErr)
			}
			if rc.Reason != ErrAuthFailed.Error() || !strings.Contains(o.edgeErr.Error(), "authentication failed") {
				t.Errorf("edge error %q (reason %q), want the generic %q", o.edgeErr, rc.Reason, ErrAuthFailed)
			}
			if strings.Contains(o.edgeErr.Error(), "unknown") || strings.Contains(o.edgeErr.Error(), "wrong") {
				t.Errorf("edge error %q tells the edge why", o.edgeErr)
			}
			if o.edgePeer.window != 0 {
				t.Errorf("edge returned window %d after a failure", o.edgePeer.window)
			}
			edgeTexts = append(edgeTexts, o.edgeErr.Error())
		})
	}
	// Every rejection looks the same from the edge.
	for _, s := range edgeTexts[1:] {
		if s != edgeTexts[0] {
			t.Errorf("edge errors differ between rejections: %q vs %q", edgeTexts[0], s)
		}
	}
}

// authFakeHub answers a real edge: HELLO, CHALLENGE, AUTH, then whatever
// authOK returns as the AUTH_OK payload.
func authFakeHub(authOK func(exp []byte, hello *helloMsg, ch *challengeMsg, auth []byte) []byte) func(*tls.Conn) error {
	return func(c *tls.Conn) error {
		hio := newHandshakeIO(c)
		p, err := hio.expect(frameHello)
		if err != nil {
			return err
		}
		var hello helloMsg
		if err := hello.UnmarshalBinary(p); err != nil {
			return err
		}
		ch := challengeMsg{Version: protocolVersion, Window: authHubWindow}
		rand.Read(ch.Nonce[:])
		cp, _ := ch.MarshalBinary()
		if err := hio.send(frameChallenge, cp); err != nil {
			return err
		}
		auth, err := hio.expect(frameAuth)
		if err != nil {
			return err
		}
		auth = append([]byte(nil), auth...)
		exp, err := tlsExporter(c)
		if err != nil {
			return err
		}
		return hio.send(frameAuthOK, authOK(exp, &hello, &ch, auth))
	}
}

func TestHandshakeEdgeRejectsUnprovenHub(t *testing.T) {
	tests := []struct {
		name   string
		authOK func(exp []byte, hello *helloMsg, ch *challengeMsg, auth []byte) []byte
		want   error // nil: the edge accepts
	}{
		{"control: correct proof", func(exp []byte, h *helloMsg, c *challengeMsg, _ []byte) []byte {
			return proof(authSecret, hubProofTag, exp, h, c)
		}, nil},
		{"zero proof", func([]byte, *helloMsg, *challengeMsg, []byte) []byte { return make([]byte, proofLen) }, ErrHubNotProven},
		{"empty proof", func([]byte, *helloMsg, *challengeMsg, []byte) []byte { return nil }, ErrHubNotProven},
		{"random proof", func([]byte, *helloMsg, *challengeMsg, []byte) []byte {
			b := make([]byte, proofLen)
			rand.Read(b)
			return b
		}, ErrHubNotProven},
		{"edge's own proof reflected", func(_ []byte, _ *helloMsg, _ *challengeMsg, auth []byte) []byte { return auth }, ErrHubNotProven},
		{"proof with the wrong secret", func(exp []byte, h *helloMsg, c *challengeMsg, _ []byte) []byte {
			return proof(authWrongSec, hubProofTag, exp, h, c)
		}, ErrHubNotProven},
		{"right secret, another TLS session", func(exp []byte, h *helloMsg, c *challengeMsg, _ []byte) []byte {
			return proof(authSecret, hubProofTag, make([]byte, len(exp)), h, c)
		}, ErrHubNotProven},
		{"right secret, edge tag", func(exp []byte, h *helloMsg, c *challengeMsg, _ []byte) []byte {
			return proof(authSecret, edgeProofTag, exp, h, c)
		}, ErrHubNotProven},
		{"correct proof with a trailing byte", func(exp []byte, h *helloMsg, c *challengeMsg, _ []byte) []byte {
			return append(proof(authSecret, hubProofTag, exp, h, c), 0)
		}, ErrHubNotProven},
		{"correct proof truncated", func(exp []byte, h *helloMsg, c *challengeMsg, _ []byte) []byte {
			return proof(authSecret, hubProofTag, exp, h, c)[:proofLen-1]
		}, ErrHubNotProven},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hubC, edgeC := authTLSPair(t, nil, nil)
			var peer peerParams
			hubErr, edgeErr := authRun(hubC, edgeC, authFakeHub(tc.authOK), func(c *tls.Conn) (err error) {
				peer, err = edgeHandshake(c, authEdgeID, authSecret, authEdgeWindow, setPlace{Size: 1}, ourCaps)
				return err
			})
			authNoSecretIn(t, hubErr, edgeErr)
			if hubErr != nil {
				t.Fatalf("fake hub: %v", hubErr)
			}
			if tc.want == nil {
				if edgeErr != nil || peer.window != authHubWindow {
					t.Fatalf("edge = %d, %v; want %d, nil", peer.window, edgeErr, authHubWindow)
				}
				return
			}
			if !errors.Is(edgeErr, tc.want) {
				t.Fatalf("edge error = %v, want %v", edgeErr, tc.want)
			}
			if peer.window != 0 {
				t.Errorf("edge returned window %d for an unproven hub", peer.window)
			}
		})
	}
}

// authRelayFrames copies frames from src to dst, recording their types,
// until src fails; then it closes dst.
func authRelayFrames(dst, src *tls.Conn, seen *[]frameType) {
	defer dst.Close()
	fr := newFrameReader(src)
	hio := newHandshakeIO(dst)
	for {
		h, p, err := fr.ReadFrame()
		if err != nil {
			return
		}
		*seen = append(*seen, h.Type)
		if err := hio.fw.WriteFrame(h.StreamID, h.Type, p); err != nil {
			return
		}
		if err := hio.bw.Flush(); err != nil {
			return
		}
	}
}

// TestHandshakeManInTheMiddle: a relay that terminates the edge's TLS with
// its own certificate and opens its own TLS session to the real hub cannot
// pass the edge off to the hub, because the proofs are bound to the TLS
// exporter of each session.
func TestHandshakeManInTheMiddle(t *testing.T) {
	mitmCert, err := hubCertificate("", "")
	if err != nil {
		t.Fatal(err)
	}
	// edge <-> mitm
	mitmS, edgeRaw := authTCPPair(t)
	// mitm <-> hub
	hubRaw, mitmRaw := authTCPPair(t)

	mitmFromEdge := tls.Server(mitmS, hubTLSConfig(mitmCert))
	edgeC := tls.Client(edgeRaw, edgeTLSConfig("127.0.0.1"))
	hubC := tls.Server(hubRaw, hubTLSConfig(authHubCert(t)))
	mitmToHub := tls.Client(mitmRaw, edgeTLSConfig("127.0.0.1"))
	authTLSHandshake(t, mitmFromEdge, edgeC)
	authTLSHandshake(t, hubC, mitmToHub)

	if certFingerprint(mitmCert) == certFingerprint(authHubCert(t)) {
		t.Fatal("the relay uses the hub's certificate")
	}
	ee, _ := tlsExporter(edgeC)
	he, _ := tlsExporter(hubC)
	if bytes.Equal(ee, he) {
		t.Fatal("the two TLS sessions have the same exporter")
	}

	var toHub, toEdge []frameType
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); authRelayFrames(mitmToHub, mitmFromEdge, &toHub) }()
	go func() { defer wg.Done(); authRelayFrames(mitmFromEdge, mitmToHub, &toEdge) }()

	o := authFullHandshake(t, hubC, edgeC, authEdgeID, authSecret, authLookup(map[string]string{authEdgeID: authSecret}))
	wg.Wait()

	if !errors.Is(o.hubErr, ErrAuthFailed) || !strings.Contains(o.hubErr.Error(), "wrong secret") {
		t.Errorf("hub error = %v, want an authentication failure (wrong proof)", o.hubErr)
	}
	if o.hub.peer.window != 0 {
		t.Errorf("hub accepted the relayed edge: %+v", o.hub)
	}
	if o.edgeErr == nil || o.edgePeer.window != 0 {
		t.Fatalf("edge = %d, %v; want a failure", o.edgePeer.window, o.edgeErr)
	}
	if errors.Is(o.edgeErr, ErrHubNotProven) {
		t.Errorf("edge error %v: the edge received an AUTH_OK", o.edgeErr)
	}
	if diff := cmp.Diff([]frameType{frameHello, frameAuth}, toHub); diff != "" {
		t.Errorf("frames relayed to the hub (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]frameType{frameChallenge, frameGoAway}, toEdge); diff != "" {
		t.Errorf("frames relayed to the edge (-want +got):\n%s", diff)
	}
}

// authRawPeer writes wire (frames already encoded), closes its sending
// side and reads until the peer closes.
func authRawPeer(wire []byte) func(*tls.Conn) error {
	return func(c *tls.Conn) error {
		if _, err := c.Write(wire); err != nil {
			return err
		}
		if err := c.CloseWrite(); err != nil {
			return err
		}
		var buf [512]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return nil
			}
		}
	}
}

func TestHandshakeHubRejectsBadFirstFrames(t *testing.T) {
	goodHello := func(mut func(*helloMsg)) []byte {
		h := helloMsg{Version: protocolVersion, Window: authEdgeWindow, EdgeID: authEdgeID}
		if mut != nil {
			mut(&h)
		}
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		wire []byte
		want error
	}{
		{"pre-auth frame of 513 bytes", appendFrame(nil, 0, frameHello, make([]byte, preAuthLimit+1)), errFrameTooLarge},
		{"pre-auth header claiming 16 MiB", []byte{0, 0, 0, 0, byte(frameHello), 1, 0, 0, 0}, errFrameTooLarge},
		{"512-byte HELLO is read, then rejected as malformed", appendFrame(nil, 0, frameHello, make([]byte, preAuthLimit)), errBadHandshake},
		{"HELLO with trailing byte", appendFrame(nil, 0, frameHello, append(goodHello(nil), 0)), errBadHandshake},
		{"HELLO version 0", appendFrame(nil, 0, frameHello, goodHello(func(h *helloMsg) { h.Version = 0 })), errBadHandshake},
		{"HELLO on stream 1", appendFrame(nil, 1, frameHello, goodHello(nil)), errBadHandshake},
		{"DATA first", appendFrame(nil, 1, frameData, []byte("GET /")), errBadHandshake},
		{"AUTH first", appendFrame(nil, 0, frameAuth, make([]byte, proofLen)), errBadHandshake},
		{"unknown frame type", []byte{0, 0, 0, 0, 0x42, 0, 0, 0, 0}, errUnknownFrame},
		{"truncated header", []byte{0, 0, 0, 0, 0x10}, errTruncatedHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hubC, edgeC := authTLSPair(t, nil, nil)
			var res hubAuthResult
			hubErr, _ := authRun(hubC, edgeC, func(c *tls.Conn) (err error) {
				res, err = hubHandshake(c, authHubWindow, authLookup(map[string]string{authEdgeID: authSecret}), nil)
				return err
			}, authRawPeer(tc.wire))
			if !errors.Is(hubErr, tc.want) {
				t.Fatalf("hub error = %v, want %v", hubErr, tc.want)
			}
			if res.peer.window != 0 {
				t.Errorf("hub result %+v after an error", res)
			}
		})
	}
}

func TestHandshakeEdgeRejectsBadChallenge(t *testing.T) {
	goodCh := func(mut func(*challengeMsg)) []byte {
		c := challengeMsg{Version: protocolVersion, Window: authHubWindow}
		if mut != nil {
			mut(&c)
		}
		b, _ := c.MarshalBinary()
		return b
	}
	tests := []struct {
		name  string
		reply []byte
		want  error
	}{
		{"pre-auth frame of 513 bytes", appendFrame(nil, 0, frameChallenge, make([]byte, preAuthLimit+1)), errFrameTooLarge},
		{"GOAWAY of 513 bytes", appendFrame(nil, 0, frameGoAway, bytes.Repeat([]byte("x"), preAuthLimit+1)), errFrameTooLarge},
		{"512-byte CHALLENGE is read, then rejected as malformed", appendFrame(nil, 0, frameChallenge, make([]byte, preAuthLimit)), errBadHandshake},
		{"CHALLENGE too short", appendFrame(nil, 0, frameChallenge, goodCh(nil)[:41]), errBadHandshake},
		{"CHALLENGE version 0", appendFrame(nil, 0, frameChallenge, goodCh(func(c *challengeMsg) { c.Version = 0 })), errBadHandshake},
		{"CHALLENGE on stream 3", appendFrame(nil, 3, frameChallenge, goodCh(nil)), errBadHandshake},
		{"AUTH_OK instead of CHALLENGE", appendFrame(nil, 0, frameAuthOK, make([]byte, proofLen)), errBadHandshake},
		{"DATA_BACK instead of CHALLENGE", appendFrame(nil, 1, frameDataBack, []byte("x")), errBadHandshake},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hubC, edgeC := authTLSPair(t, nil, nil)
			var peer peerParams
			_, edgeErr := authRun(hubC, edgeC, func(c *tls.Conn) error {
				if _, err := newHandshakeIO(c).expect(frameHello); err != nil {
					return err
				}
				return authRawPeer(tc.reply)(c)
			}, func(c *tls.Conn) (err error) {
				peer, err = edgeHandshake(c, authEdgeID, authSecret, authEdgeWindow, setPlace{Size: 1}, ourCaps)
				return err
			})
			if !errors.Is(edgeErr, tc.want) {
				t.Fatalf("edge error = %v, want %v", edgeErr, tc.want)
			}
			if peer.window != 0 {
				t.Errorf("edge returned window %d after an error", peer.window)
			}
		})
	}
}

func TestHandshakeGoAwayReasonSanitized(t *testing.T) {
	hubC, edgeC := authTLSPair(t, nil, nil)
	reason := append([]byte("maintenance\x00\r\n\x1b[31m\xff"), bytes.Repeat([]byte("y"), 300)...)
	_, edgeErr := authRun(hubC, edgeC, authRawPeer(appendFrame(nil, 0, frameGoAway, reason)), func(c *tls.Conn) error {
		_, err := edgeHandshake(c, authEdgeID, authSecret, authEdgeWindow, setPlace{Size: 1}, ourCaps)
		return err
	})
	var rc *remoteCloseError
	if !errors.As(edgeErr, &rc) {
		t.Fatalf("edge error = %v, want *remoteCloseError", edgeErr)
	}
	want := "maintenance????[31m?" + strings.Repeat("y", 200-len("maintenance????[31m?"))
	if rc.Reason != want {
		t.Errorf("reason = %q, want %q", rc.Reason, want)
	}
}

func authTestHello() helloMsg {
	// Caps without capConnectionSet: no setPlace trailer.
	h := helloMsg{Version: 1, Caps: 0xDEADBEED, Window: 0x00040000, EdgeID: "edge-1", Set: setPlace{Size: 1}}
	for i := range h.Nonce {
		h.Nonce[i] = byte(i + 1)
	}
	return h
}

func TestHelloMarshalLayout(t *testing.T) {
	h := authTestHello()
	got, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := codecHex(t, "0001 deadbeed 00040000"+
		"0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"+
		"06"+hex.EncodeToString([]byte("edge-1")))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HELLO bytes (-want +got):\n%s", diff)
	}

	h.Caps = capWindowAutotune | capConnectionSet
	h.Set = setPlace{ID: 0x0102030405060708, Index: 2, Size: 3}
	got, err = h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want = codecHex(t, "0001 00000003 00040000"+
		"0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"+
		"06"+hex.EncodeToString([]byte("edge-1"))+"0102030405060708 02 03")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HELLO bytes with a tunnel set (-want +got):\n%s", diff)
	}

	c := challengeMsg{Version: 2, Caps: 1, Window: 0x01020304, Nonce: h.Nonce}
	got, _ = c.MarshalBinary()
	want = codecHex(t, "0002 00000001 01020304"+"0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CHALLENGE bytes (-want +got):\n%s", diff)
	}
}

func TestHelloRoundTrip(t *testing.T) {
	for i, id := range []string{"e", "edge-1", strings.Repeat("x", maxEdgeIDLen), "ünïcødé", "a b\x00c"} {
		h := authTestHello()
		h.EdgeID = id
		trailer := 0
		if i%2 == 1 {
			h.Caps |= capConnectionSet
			h.Set = setPlace{ID: uint64(i) << 40, Index: uint8(i), Size: MaxTunnelConnections}
			trailer = tunnelSetLen
		}
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("Marshal(id %q): %v", id, err)
		}
		if len(b) != 2+4+4+nonceLen+1+len(id)+trailer {
			t.Errorf("id %q: %d bytes", id, len(b))
		}
		var back helloMsg
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatalf("Unmarshal(id %q): %v", id, err)
		}
		if diff := cmp.Diff(h, back); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestHelloMarshalRejectsBadID(t *testing.T) {
	for _, id := range []string{"", strings.Repeat("x", maxEdgeIDLen+1), strings.Repeat("x", 1000)} {
		h := authTestHello()
		h.EdgeID = id
		if b, err := h.MarshalBinary(); err == nil {
			t.Errorf("Marshal accepted a %d-byte id: %x", len(id), b)
		}
	}
}

func TestHelloUnmarshalRejects(t *testing.T) {
	h := authTestHello()
	good, _ := h.MarshalBinary()
	const fixed = 2 + 4 + 4 + nonceLen + 1
	withLen := func(n byte, id string) []byte {
		b := append([]byte(nil), good[:fixed-1]...)
		return append(append(b, n), id...)
	}
	// withSet is good with capConnectionSet announced and trailer after it.
	withSet := func(trailer []byte) []byte {
		b := append([]byte(nil), good...)
		binary.BigEndian.PutUint32(b[2:6], binary.BigEndian.Uint32(b[2:6])|capConnectionSet)
		return append(b, trailer...)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"one byte", []byte{0}},
		{"fixed part minus one", good[:fixed-1]},
		{"fixed part only", good[:fixed]},
		{"zero-length id", withLen(0, "")},
		{"zero-length id with a byte after", withLen(0, "x")},
		{"id shorter than its length", withLen(6, "edge-")},
		{"id longer than its length", withLen(5, "edge-1")},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"id length 255, 254 bytes", withLen(255, strings.Repeat("x", 254))},
		{"id length 1, 256 bytes", withLen(1, strings.Repeat("x", 256))},
		{"tunnel set announced, missing", withSet(nil)},
		{"tunnel set short", withSet([]byte{1, 2, 3, 4, 5, 6, 7, 8, 0})},
		{"tunnel set long", withSet([]byte{1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0})},
		{"tunnel set of size 0", withSet([]byte{1, 2, 3, 4, 5, 6, 7, 8, 0, 0})},
		{"tunnel set too large", withSet([]byte{1, 2, 3, 4, 5, 6, 7, 8, 0, MaxTunnelConnections + 1})},
		{"index beyond the set", withSet([]byte{1, 2, 3, 4, 5, 6, 7, 8, 2, 2})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h helloMsg
			if err := h.UnmarshalBinary(tc.b); !errors.Is(err, errBadHandshake) {
				t.Fatalf("Unmarshal(%x) = %v, want errBadHandshake", tc.b, err)
			}
		})
	}
}

func TestChallengeRoundTripAndRejects(t *testing.T) {
	c := challengeMsg{Version: 1, Caps: 0xFFFFFFFF, Window: authHubWindow}
	rand.Read(c.Nonce[:])
	b, err := c.MarshalBinary()
	if err != nil || len(b) != 10+nonceLen {
		t.Fatalf("Marshal = %d bytes, %v", len(b), err)
	}
	var back challengeMsg
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for _, bad := range [][]byte{nil, b[:1], b[:10], b[:len(b)-1], append(append([]byte(nil), b...), 0)} {
		if err := back.UnmarshalBinary(bad); !errors.Is(err, errBadHandshake) {
			t.Errorf("Unmarshal(%d bytes) = %v, want errBadHandshake", len(bad), err)
		}
	}
}

func FuzzHandshakeParse(f *testing.F) {
	h := authTestHello()
	hb, _ := h.MarshalBinary()
	f.Add(hb)
	h.EdgeID = strings.Repeat("z", maxEdgeIDLen)
	hb, _ = h.MarshalBinary()
	f.Add(hb)
	c := challengeMsg{Version: 1, Window: 5, Nonce: h.Nonce}
	cb, _ := c.MarshalBinary()
	f.Add(cb)
	f.Add([]byte{})
	f.Add(hb[:43])
	f.Add(append(hb, 0))
	h.Caps |= capConnectionSet
	h.Set = setPlace{ID: 42, Index: 3, Size: 4}
	hb, _ = h.MarshalBinary()
	f.Add(hb)
	f.Fuzz(func(t *testing.T, b []byte) {
		var h helloMsg
		if err := h.UnmarshalBinary(b); err == nil {
			if len(h.EdgeID) == 0 || len(h.EdgeID) > maxEdgeIDLen {
				t.Fatalf("accepted id of %d bytes", len(h.EdgeID))
			}
			if !h.Set.valid() {
				t.Fatalf("accepted tunnel set %+v", h.Set)
			}
			out, err := h.MarshalBinary()
			if err != nil {
				t.Fatalf("accepted HELLO does not re-marshal: %v", err)
			}
			if !bytes.Equal(out, b) {
				t.Fatalf("HELLO %x re-marshals to %x", b, out)
			}
		} else if !errors.Is(err, errBadHandshake) {
			t.Fatalf("HELLO error %v is not errBadHandshake", err)
		}
		var c challengeMsg
		if err := c.UnmarshalBinary(b); err == nil {
			out, _ := c.MarshalBinary()
			if !bytes.Equal(out, b) {
				t.Fatalf("CHALLENGE %x re-marshals to %x", b, out)
			}
		} else if !errors.Is(err, errBadHandshake) {
			t.Fatalf("CHALLENGE error %v is not errBadHandshake", err)
		}
	})
}

// --- certificates ---

var authHexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestCertGeneratedIsP256AndValid(t *testing.T) {
	c1, err := hubCertificate("", "")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := hubCertificate("", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c1.Certificate) != 1 {
		t.Fatalf("chain of %d certificates, want 1", len(c1.Certificate))
	}
	leaf, err := x509.ParseCertificate(c1.Certificate[0])
	if err != nil {
		t.Fatalf("parse leaf: %v", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	priv, ok := c1.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !priv.PublicKey.Equal(pub) {
		t.Fatalf("private key %T does not match the certificate", c1.PrivateKey)
	}
	now := time.Now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		t.Errorf("certificate valid %v to %v, not now (%v)", leaf.NotBefore, leaf.NotAfter, now)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, leaf.ExtKeyUsage); diff != "" {
		t.Errorf("ext key usage (-want +got):\n%s", diff)
	}
	fp := certFingerprint(c1)
	if !authHexRE.MatchString(fp) {
		t.Errorf("fingerprint %q is not 64 lowercase hex characters", fp)
	}
	if sum := sha256.Sum256(leaf.Raw); fp != hex.EncodeToString(sum[:]) {
		t.Errorf("fingerprint %s is not the SHA-256 of the leaf", fp)
	}
	if fp == certFingerprint(c2) {
		t.Errorf("two generated certificates have the same fingerprint")
	}
	if got := certFingerprint(tls.Certificate{}); got != "" {
		t.Errorf("fingerprint of an empty certificate = %q, want empty", got)
	}
}

// authPEMPair generates a self-signed ECDSA certificate as PEM.
func authPEMPair(t *testing.T, pkcs8 bool) (certPEM, keyPEM string, der []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "hub.example"},
		DNSNames:     []string{"hub.example"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	var kb *pem.Block
	if pkcs8 {
		b, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		kb = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	} else {
		b, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		kb = &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(kb)), der
}

func TestCertLoadsPEMPair(t *testing.T) {
	for _, pkcs8 := range []bool{true, false} {
		certPEM, keyPEM, der := authPEMPair(t, pkcs8)
		cert, err := hubCertificate(certPEM, keyPEM)
		if err != nil {
			t.Fatalf("pkcs8=%v: hubCertificate: %v", pkcs8, err)
		}
		if len(cert.Certificate) != 1 || !bytes.Equal(cert.Certificate[0], der) {
			t.Fatalf("pkcs8=%v: loaded a different certificate", pkcs8)
		}
		sum := sha256.Sum256(der)
		if fp := certFingerprint(cert); fp != hex.EncodeToString(sum[:]) {
			t.Errorf("fingerprint %s, want %x", fp, sum)
		}

		// The loaded certificate serves TLS and is what the edge sees.
		hubC, edgeC := authTLSPair(t, hubTLSConfig(cert), nil)
		peer := edgeC.ConnectionState().PeerCertificates
		if len(peer) != 1 || !bytes.Equal(peer[0].Raw, der) {
			t.Errorf("edge saw %d certificates, not the loaded one", len(peer))
		}
		o := authFullHandshake(t, hubC, edgeC, authEdgeID, authSecret, authLookup(map[string]string{authEdgeID: authSecret}))
		if o.hubErr != nil || o.edgeErr != nil {
			t.Errorf("handshake with a loaded certificate: hub %v, edge %v", o.hubErr, o.edgeErr)
		}
	}
}

func TestCertRejectsBadPEM(t *testing.T) {
	certPEM, keyPEM, _ := authPEMPair(t, true)
	_, otherKey, _ := authPEMPair(t, true)
	tests := []struct {
		name, cert, key, want string
	}{
		{"garbage", "not a certificate", "not a key", "invalid TLS certificate or key"},
		{"garbage PEM blocks", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
			"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "invalid TLS certificate or key"},
		{"good cert, garbage key", certPEM, "garbage", "invalid TLS certificate or key"},
		{"garbage cert, good key", "garbage", keyPEM, "invalid TLS certificate or key"},
		{"key of another certificate", certPEM, otherKey, "invalid TLS certificate or key"},
		{"key and cert swapped", keyPEM, certPEM, "invalid TLS certificate or key"},
		{"only the certificate", certPEM, "", "together"},
		{"only the key", "", keyPEM, "together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := hubCertificate(tc.cert, tc.key)
			if err == nil {
				t.Fatalf("hubCertificate accepted it (%d certificates)", len(cert.Certificate))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			// No key material in the message.
			for _, k := range []string{keyPEM, otherKey} {
				body := strings.Split(k, "\n")[1]
				if strings.Contains(err.Error(), body) {
					t.Errorf("error %q contains key material", err)
				}
			}
			if len(cert.Certificate) != 0 || cert.PrivateKey != nil {
				t.Errorf("returned a certificate with the error")
			}
		})
	}
}

// TestHandshakeTLSRefusesWeakClients: the hub's TLS configuration accepts
// neither TLS 1.1 nor non-AEAD TLS 1.2 suites, nor a client without the ALPN name.
func TestHandshakeTLSRefusesWeakClients(t *testing.T) {
	tests := []struct {
		name string
		conf *tls.Config
	}{
		{"TLS 1.1", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
		{"CBC suites", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}},
		{"other ALPN", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := authTCPPair(t)
			hub, client := tls.Server(s, hubTLSConfig(authHubCert(t))), tls.Client(c, tc.conf)
			errc := make(chan error, 1)
			go func() { err := hub.Handshake(); hub.Close(); errc <- err }()
			cerr := client.Handshake()
			client.Close()
			if herr := <-errc; herr == nil && cerr == nil {
				t.Fatalf("TLS handshake succeeded: version %#x suite %s",
					client.ConnectionState().Version, tls.CipherSuiteName(client.ConnectionState().CipherSuite))
			}
		})
	}
}

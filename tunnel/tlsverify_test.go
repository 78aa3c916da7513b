package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// testCA makes a CA and a hub certificate for dnsName signed by it (PEM).
func testCA(t *testing.T, dnsName string) (caPEM, certPEM, keyPEM string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// tryEdge starts an edge against hubPort and returns the first tunnel event.
func tryEdge(t *testing.T, hubPort int, cfg EdgeConfig) Event {
	t.Helper()
	events := newEventLog()
	if cfg.Secret == "" {
		cfg.Secret = "s3cret"
	}
	cfg.HubHost, cfg.HubPort, cfg.EdgeID = "127.0.0.1", hubPort, "edge-1"
	cfg.ListenHost, cfg.ListenPorts, cfg.StunInterval = "127.0.0.1", []int{testutil.FreePort(t, "127.0.0.1", "127.0.0.2")}, -1
	cfg.ReconnectMin, cfg.Logger, cfg.Events = time.Hour, testLogger(t), events.sink
	e, err := StartEdge(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ev, _ := events.wait(t, 0, 10*time.Second, func(e Event) bool {
		return e.Name == EventTunnelConnected || e.Name == EventTunnelDisconnected
	})
	return ev
}

func TestEdgeVerifiesHub(t *testing.T) {
	caPEM, certPEM, keyPEM := testCA(t, "hub.test")
	otherCA, _, _ := testCA(t, "hub.test")
	hub, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TLSCertPEM: certPEM, TLSKeyPEM: keyPEM, Logger: testLogger(t)},
		[]EdgeCredential{{ID: "edge-1", Secret: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	pin := hub.Status().CertSha256
	colonPin := strings.ToUpper(strings.Join(splitEvery(pin, 2), ":"))
	wrongPin := strings.Repeat("ab", 32)
	cases := []struct {
		name    string
		cfg     EdgeConfig
		ok      bool
		errPart string
	}{
		{"no verification (channel-bound auth only)", EdgeConfig{}, true, ""},
		{"pinned", EdgeConfig{HubCertSHA256: pin}, true, ""},
		{"pinned, colon form", EdgeConfig{HubCertSHA256: colonPin}, true, ""},
		{"wrong pin", EdgeConfig{HubCertSHA256: wrongPin}, false, "does not match the pinned"},
		{"CA and server name", EdgeConfig{HubCAPEM: caPEM, HubServerName: "hub.test"}, true, ""},
		{"CA, wrong server name", EdgeConfig{HubCAPEM: caPEM, HubServerName: "other.test"}, false, "certificate"},
		{"other CA", EdgeConfig{HubCAPEM: otherCA, HubServerName: "hub.test"}, false, "certificate"},
		{"CA and pin", EdgeConfig{HubCAPEM: caPEM, HubServerName: "hub.test", HubCertSHA256: pin}, true, ""},
	}
	eachTransport(t, func(t *testing.T, tr string) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				cfg := tc.cfg
				cfg.Transport = tr
				ev := tryEdge(t, hub.Port(), cfg)
				if tc.ok != (ev.Name == EventTunnelConnected) {
					t.Fatalf("got %s %+v", ev.Name, ev.Data)
				}
				if !tc.ok && !strings.Contains(ev.Data.(TunnelDisconnectedEvent).Reason, tc.errPart) {
					t.Fatalf("reason %q does not mention %q", ev.Data.(TunnelDisconnectedEvent).Reason, tc.errPart)
				}
			})
		}
	})
	for _, bad := range []EdgeConfig{{HubCertSHA256: "xyz"}, {HubCertSHA256: pin[:10]}, {HubCAPEM: "not pem"}} {
		bad.HubHost, bad.EdgeID, bad.Secret, bad.ListenPorts = "127.0.0.1", "e", "s", []int{testutil.FreePort(t, "127.0.0.1", "127.0.0.2")}
		if e, err := StartEdge(bad); err == nil {
			e.Close()
			t.Fatalf("StartEdge accepted %+v", bad)
		}
	}
}

func splitEvery(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

// A man in the middle with its own certificate, relaying everything between a
// real edge and the real hub, gets neither side to accept, and no client byte
// ever reaches it.
func TestManInTheMiddleRelayIsRefused(t *testing.T) {
	r := startRig(t, rigOptions{}) // a genuine pair, to have a hub
	hubAddr := fmt.Sprintf("127.0.0.1:%d", r.hub.Port())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := hubCertificate("", "")
	var rec edgeRecorder
	var wg sync.WaitGroup
	defer func() { ln.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				edgeSide := tls.Server(c, hubTLSConfig(cert))
				hubSide, err := tls.Dial("tcp", hubAddr, edgeTLSConfig("127.0.0.1"))
				if err != nil {
					return
				}
				defer hubSide.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(edgeSide, hubSide)
					edgeSide.Close()
					close(done)
				}()
				rec.relay(hubSide, edgeSide)
				hubSide.Close()
				<-done
			}()
		}
	}()
	ev := tryEdge(t, ln.Addr().(*net.TCPAddr).Port, EdgeConfig{Secret: r.secret}) // the right secret
	if ev.Name != EventTunnelDisconnected || !strings.Contains(ev.Data.(TunnelDisconnectedEvent).Reason, "authentication failed") {
		t.Fatalf("through the relay: %s %+v", ev.Name, ev.Data)
	}
	ln.Close()
	rec.check(t)
	if n := countEvents(r.hubEvents, EventEdgeConnected); n != 1 {
		t.Fatalf("the hub accepted %d tunnels, want only the genuine one", n)
	}
}

// edgeRecorder keeps what a man in the middle read from the edge.
type edgeRecorder struct {
	mu sync.Mutex
	b  []byte
}

// relay copies src (the edge's side) to dst until src ends, keeping a copy.
func (r *edgeRecorder) relay(dst io.Writer, src io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		r.mu.Lock()
		r.b = append(r.b, buf[:n]...)
		r.mu.Unlock()
		if n > 0 {
			dst.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// check fails unless the edge sent something and nothing but HELLO and AUTH.
func (r *edgeRecorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	fr := newFrameReader(strings.NewReader(string(r.b)))
	n := 0
	for {
		h, _, err := fr.ReadFrame()
		if err != nil {
			break
		}
		n++
		if h.Type != frameHello && h.Type != frameAuth {
			t.Fatalf("the edge sent %s through the man in the middle", h.Type)
		}
	}
	if n == 0 {
		t.Fatal("the relay saw nothing of the edge: the test did not test the relay")
	}
}

// countEvents counts the events named name so far.
func countEvents(l *eventLog, name string) int {
	n := 0
	for _, e := range l.snapshot() {
		if e.Name == name {
			n++
		}
	}
	return n
}

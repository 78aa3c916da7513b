package bridge

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/internal/token"
	"github.com/serve-zone/remoteingress/tunnel"
)

const testPin = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func encodeToken(t testing.TB, tok token.Token) string {
	t.Helper()
	s, err := token.Encode(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tokenOf decodes a createConnectionToken result.
func tokenOf(t testing.TB, res json.RawMessage) (string, token.Token) {
	t.Helper()
	var r struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(res, &r); err != nil || r.Token == "" {
		t.Fatalf("createConnectionToken result %s", res)
	}
	tok, err := token.Decode(r.Token)
	if err != nil {
		t.Fatalf("the token does not decode: %v", err)
	}
	return r.Token, tok
}

// startEdge with a token takes the hub, the identity and the pin from it;
// beside it none of the four params it stands for may be given; a token
// that does not decode is refused saying why, never showing it.
func TestStartEdgeTokenParam(t *testing.T) {
	const secret = "TOKSECRET-edge-9c1"
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		good := encodeToken(t, token.Token{HubHost: "hub.example.com", HubPort: 9443, EdgeID: "edge-nyc-01", Secret: secret, HubCertSHA256: testPin})
		enc := func(js string) string { return base64.RawURLEncoding.EncodeToString([]byte(js)) }
		var tokens []string // every token sent, none of which may be written
		fail := func(params map[string]any, want string) {
			t.Helper()
			if tok, ok := params["token"].(string); ok && tok != "" {
				tokens = append(tokens, tok)
			}
			r := s.call("startEdge", params)
			if r.ok || r.message != want {
				t.Fatalf("startEdge %v: got %+v, want the failure %q", params, r, want)
			}
			if d == JSONRPC && r.code != jsonrpc2.CodeInvalidParams {
				t.Fatalf("startEdge: code %d, want %d", r.code, jsonrpc2.CodeInvalidParams)
			}
		}
		base := map[string]any{"token": good, "listenPorts": []int{80}}
		for _, k := range []string{"hubHost", "hubPort", "edgeId", "secret"} {
			v := any("x")
			if k == "hubPort" {
				v = 8443
			}
			fail(with(base, k, v), "startEdge: "+k+" cannot be given with token: the token gives the hub, the edge id and the secret")
		}
		fail(with(base, "hubCertSha256", strings.Repeat("1", 64)), "startEdge: hubCertSha256 differs from the certificate pin of the token (token)")
		fail(with(base, "token", 42), "startEdge: token must be a string")
		fail(with(base, "token", ""), "startEdge: token is empty")
		fail(with(base, "token", good[:len(good)-5]+"*"+good[len(good)-4:]), "startEdge: token is not base64url (or base64)")
		fail(with(base, "token", enc(`["`+secret+`"]`)), "startEdge: token does not hold a JSON object")
		fail(with(base, "token", enc(`{"h":"h","p":1,"e":"e"}`)), `startEdge: token has no secret ("s")`)
		fail(with(base, "token", enc(`{"h":"h","p":"1","e":"e","s":"`+secret+`"}`)), `startEdge: token field "p" (hub port) must be an integer`)
		fail(with(base, "token", enc(`{"h":"h","p":65536,"e":"e","s":"`+secret+`"}`)), `startEdge: token hub port ("p") must be an integer 1-65535`)
		fail(with(base, "token", enc(`{"h":"h","p":1,"e":"e","s":"`+secret+`","f":"`+testPin[:62]+`"}`)), `startEdge: token certificate pin ("f") must be a SHA-256 in hex (64 digits)`)
		// Without a token the four params are required, as always.
		fail(map[string]any{"edgeId": "e", "secret": secret, "listenPorts": []int{80}}, "startEdge: hubHost is required")
		fail(map[string]any{"token": nil, "hubHost": "h", "secret": secret, "listenPorts": []int{80}}, "startEdge: edgeId is required")
		if n := len(eng.edgeStartCalls()); n != 0 {
			t.Fatalf("%d edges started by failing calls", n)
		}

		// A good token (the same pin may be given beside it, in any case).
		s.mustCall("startEdge", with(with(base, "listenHost", "127.0.0.1"), "hubCertSha256", strings.ToUpper(testPin)))
		s.mustCall("stopEdge", nil)
		noPin := encodeToken(t, token.Token{HubHost: "10.0.0.1", HubPort: 1, EdgeID: "e2", Secret: secret + "2"})
		tokens = append(tokens, good, noPin)
		s.mustCall("startEdge", map[string]any{"token": noPin, "listenPorts": []int{443}})
		edge := func(f func(c *tunnel.EdgeConfig)) tunnel.EdgeConfig {
			c := tunnel.DefaultEdgeConfig()
			f(&c)
			return c
		}
		want := []tunnel.EdgeConfig{
			edge(func(c *tunnel.EdgeConfig) {
				c.HubHost, c.HubPort, c.EdgeID, c.Secret, c.HubCertSHA256 = "hub.example.com", 9443, "edge-nyc-01", secret, testPin
				c.ListenPorts, c.ListenHost = []int{80}, "127.0.0.1"
			}),
			edge(func(c *tunnel.EdgeConfig) {
				c.HubHost, c.HubPort, c.EdgeID, c.Secret, c.ListenPorts = "10.0.0.1", 1, "e2", secret+"2", []int{443}
			}),
		}
		if diff := cmp.Diff(want, eng.edgeStartCalls(), ignoreFuncs...); diff != "" {
			t.Errorf("edge configs (-want +got):\n%s", diff)
		}
		s.mustCall("stopEdge", nil)
		s.closeInput()
		if err := s.wait(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		out, logs := s.out.String(), s.logs.String()
		if !strings.Contains(logs, `msg="request failed"`) {
			t.Fatalf("the failures were not logged, so not checked:\n%s", logs)
		}
		for _, text := range append(tokens, secret) {
			if strings.Contains(out, text) || strings.Contains(logs, text) {
				t.Fatalf("a token or secret was written:\nout:\n%s\nlogs:\n%s", out, logs)
			}
		}
	})
}

func TestCreateConnectionToken(t *testing.T) {
	const secret, secret2 = "TOKSECRET-hub-a", "TOKSECRET-hub-a-rotated"
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{newHub: func() *fakeHub {
			return &fakeHub{port: 9443, status: tunnel.HubStatus{Running: true, TunnelPort: 9443, CertSha256: testPin}}
		}}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		fail := func(params any, code int64, want string) {
			t.Helper()
			r := s.call("createConnectionToken", params)
			if r.ok || r.message != want {
				t.Fatalf("createConnectionToken %v: got %+v, want the failure %q", params, r, want)
			}
			if d == JSONRPC && r.code != code {
				t.Fatalf("createConnectionToken: code %d, want %d", r.code, code)
			}
		}
		s.mustCall("updateAllowedEdges", edgesParam("edge-a", secret, "edge-b", "other-secret"))
		req := map[string]any{"edgeId": "edge-a", "hubHost": "hub.example.com"}
		fail(req, CodeOperationFailed, "createConnectionToken: hub is not running (a token carries the running hub's port and certificate pin)")
		s.mustCall("startHub", map[string]any{"tunnelPort": 0})

		var written []string
		text, tok := tokenOf(t, s.mustCall("createConnectionToken", req))
		written = append(written, text)
		if want := (token.Token{HubHost: "hub.example.com", HubPort: 9443, EdgeID: "edge-a", Secret: secret, HubCertSHA256: testPin}); tok != want {
			t.Fatalf("token %v (secret right: %v, pin %q), want %v", tok, tok.Secret == secret, tok.HubCertSHA256, want)
		}
		if again, _ := tokenOf(t, s.mustCall("createConnectionToken", req)); again != text {
			t.Fatal("the same request gave another token")
		}
		text, tok = tokenOf(t, s.mustCall("createConnectionToken", with(req, "hubPort", 443)))
		written = append(written, text)
		if tok.HubPort != 443 || tok.HubHost != "hub.example.com" || tok.Secret != secret {
			t.Fatalf("with hubPort 443: %v", tok)
		}

		fail(with(req, "edgeId", "nope"), CodeOperationFailed, `createConnectionToken: edge "nope" is not in the allowed list`)
		fail(with(req, "edgeId", nil), jsonrpc2.CodeInvalidParams, "createConnectionToken: edgeId is required")
		fail(with(req, "hubHost", nil), jsonrpc2.CodeInvalidParams, "createConnectionToken: hubHost is required")
		fail(with(req, "hubHost", ""), jsonrpc2.CodeInvalidParams, "createConnectionToken: hubHost must not be empty")
		fail(with(req, "hubPort", 0), jsonrpc2.CodeInvalidParams, "createConnectionToken: hubPort must be an integer 1-65535")
		fail(with(req, "hubPort", "443"), jsonrpc2.CodeInvalidParams, "createConnectionToken: hubPort must be an integer")
		fail([]string{"edge-a"}, jsonrpc2.CodeInvalidParams, "createConnectionToken: params must be a JSON object")

		// The token follows the allowed list: a rotated secret, a removed edge.
		s.mustCall("updateAllowedEdges", edgesParam("edge-a", secret2))
		text, tok = tokenOf(t, s.mustCall("createConnectionToken", req))
		written = append(written, text)
		if tok.Secret != secret2 {
			t.Fatal("the token does not carry the edge's current secret")
		}
		fail(with(req, "edgeId", "edge-b"), CodeOperationFailed, `createConnectionToken: edge "edge-b" is not in the allowed list`)
		s.mustCall("stopHub", nil)
		fail(req, CodeOperationFailed, "createConnectionToken: hub is not running (a token carries the running hub's port and certificate pin)")

		s.mustCall("getHubStatus", nil)
		s.closeInput()
		if err := s.wait(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		out, logs := s.out.String(), s.logs.String()
		for _, text := range append(written, secret, secret2) {
			if strings.Contains(logs, text) {
				t.Fatalf("a token or secret was logged:\n%s", logs)
			}
		}
		for _, text := range written {
			// In the answers to createConnectionToken, nowhere else (the
			// first one was asked for twice).
			if n := strings.Count(out, text); n < 1 || n > 2 {
				t.Fatalf("token written %d times:\n%s", n, out)
			}
		}
		if strings.Contains(out, secret) {
			t.Fatalf("a secret was written in plain:\n%s", out)
		}
	})
}

// startTokenTarget is a target on 127.0.0.2:port that answers each
// connection with its PROXY line and then an echo of what follows.
func startTokenTarget(t *testing.T, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("target: %v", err)
	}
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
				_ = c.SetDeadline(time.Now().Add(waitLimit))
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, line)
				_, _ = io.Copy(c, br)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
}

// The seed flow driven by a token alone: the hub makes it, the edge starts
// from it and carries traffic; a token whose pin is not the hub's
// certificate never connects and says why in events and status.
func TestRealEdgeFromAConnectionToken(t *testing.T) {
	const secret = "TOKSECRET-real-5d2e"
	s := startSession(t, Management, tunnelEngine())
	s.skipReady()
	s.mustCall("updateAllowedEdges", edgesParam("edge-1", secret))
	var started struct {
		TunnelPort int `json:"tunnelPort"`
	}
	if err := json.Unmarshal(s.mustCall("startHub", map[string]any{"tunnelPort": 0, "listenHost": "127.0.0.1", "targetHost": "127.0.0.2"}), &started); err != nil {
		t.Fatal(err)
	}
	var hs struct {
		CertSha256 string `json:"certSha256"`
	}
	if err := json.Unmarshal(s.mustCall("getHubStatus", nil), &hs); err != nil || len(hs.CertSha256) != 64 {
		t.Fatalf("hub status certSha256 %q, %v", hs.CertSha256, err)
	}
	text, tok := tokenOf(t, s.mustCall("createConnectionToken", map[string]any{"edgeId": "edge-1", "hubHost": "127.0.0.1"}))
	if want := (token.Token{HubHost: "127.0.0.1", HubPort: started.TunnelPort, EdgeID: "edge-1", Secret: secret, HubCertSHA256: hs.CertSha256}); tok != want {
		t.Fatalf("token %v (pin %q), want %v (pin %q)", tok, tok.HubCertSHA256, want, want.HubCertSHA256)
	}

	port := testutil.FreePort(t, "127.0.0.1", "127.0.0.2")
	startTokenTarget(t, port)
	edgeParams := func(tok string) map[string]any {
		return map[string]any{"token": tok, "listenPorts": []int{port}, "listenHost": "127.0.0.1", "stunIntervalSecs": 0}
	}
	isEvent := func(name string) func(msg) bool { return func(m msg) bool { return m.Event == name } }
	s.mustCall("startEdge", edgeParams(text))
	s.waitFor(isEvent("tunnelConnected"))
	s.waitFor(isEvent("edgeConnected"))

	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(c, "through the token"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\nthrough the token", c.LocalAddr().(*net.TCPAddr).Port, port)
	if string(got) != want {
		t.Fatalf("through the edge: %q, want %q", got, want)
	}
	s.mustCall("stopEdge", nil)

	// The same token with another pin: TLS fails at the edge, which says so.
	wrong := tok
	wrong.HubCertSHA256 = strings.Repeat("0", 64)
	if wrong.HubCertSHA256 == hs.CertSha256 {
		wrong.HubCertSHA256 = strings.Repeat("1", 64)
	}
	wrongText := encodeToken(t, wrong)
	s.mustCall("startEdge", edgeParams(wrongText))
	m := s.waitFor(func(m msg) bool {
		return m.Event == "tunnelDisconnected" && strings.Contains(string(m.Data), "does not match the pinned")
	})
	var ev struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(m.Data, &ev); err != nil || !strings.Contains(ev.Reason, "hub certificate fingerprint "+hs.CertSha256) {
		t.Fatalf("tunnelDisconnected %s: want the reason to name the hub's fingerprint", m.Data)
	}
	var es struct {
		Connected bool   `json:"connected"`
		LastError string `json:"lastError"`
	}
	if err := json.Unmarshal(s.mustCall("getEdgeStatus", nil), &es); err != nil || es.Connected || !strings.Contains(es.LastError, "does not match the pinned") {
		t.Fatalf("edge status: connected %v, lastError %q (%v)", es.Connected, es.LastError, err)
	}
	var hub struct {
		ConnectedEdges []json.RawMessage `json:"connectedEdges"`
	}
	if err := json.Unmarshal(s.mustCall("getHubStatus", nil), &hub); err != nil || len(hub.ConnectedEdges) != 0 {
		t.Fatalf("an edge with the wrong pin is connected: %+v", hub)
	}
	s.mustCall("stopEdge", nil)
	s.mustCall("stopHub", nil)
	s.closeInput()
	if err := s.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	out, logs := s.out.String(), s.logs.String()
	for _, x := range []string{secret, text, wrongText} {
		if strings.Contains(logs, x) {
			t.Fatalf("a token or the secret was logged:\n%s", logs)
		}
	}
	if strings.Contains(out, secret) || strings.Count(out, text) != 1 || strings.Contains(out, wrongText) {
		t.Fatalf("a token or the secret was written beyond createConnectionToken's answer:\n%s", out)
	}
}

package params

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/serve-zone/remoteingress/internal/token"
	"github.com/serve-zone/remoteingress/tunnel"
)

const testPin = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func mustToken(t testing.TB, tok token.Token) string {
	t.Helper()
	s, err := token.Encode(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// decodeEdge runs startEdge params through ExpandToken and StartEdge.
func decodeEdge(t testing.TB, raw string) (tunnel.EdgeConfig, error) {
	t.Helper()
	r := json.RawMessage(raw)
	obj, err := Parse(&r)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tunnel.DefaultEdgeConfig()
	if err := ExpandToken(obj); err != nil {
		return cfg, err
	}
	return cfg, StartEdge.Decode(obj, &cfg)
}

func TestExpandTokenGivesHubIdentityAndPin(t *testing.T) {
	tok := mustToken(t, token.Token{HubHost: "hub.example.com", HubPort: 9443, EdgeID: "edge-nyc-01", Secret: "hunter2-secret", HubCertSHA256: testPin})
	cfg, err := decodeEdge(t, `{"token":"`+tok+`","listenPorts":[80],"hubCertSha256":"`+strings.ToUpper(testPin)+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HubHost != "hub.example.com" || cfg.HubPort != 9443 || cfg.EdgeID != "edge-nyc-01" || cfg.Secret != "hunter2-secret" || cfg.HubCertSHA256 != testPin {
		t.Fatalf("decoded %v (pin %q)", cfg, cfg.HubCertSHA256)
	}
	// Without "f" the pin is whatever the params say (here: none).
	tok = mustToken(t, token.Token{HubHost: "h", HubPort: 1, EdgeID: "e", Secret: "s"})
	if cfg, err = decodeEdge(t, `{"token":"`+tok+`","listenPorts":[80]}`); err != nil || cfg.HubCertSHA256 != "" || cfg.HubHost != "h" {
		t.Fatalf("decoded %v, %v", cfg, err)
	}
	// No token: the four params as before.
	if _, err := decodeEdge(t, `{"token":null,"edgeId":"e","secret":"s","listenPorts":[80]}`); err == nil || err.Error() != "hubHost is required" {
		t.Fatalf("without a token: %v", err)
	}
}

func TestExpandTokenErrors(t *testing.T) {
	const secret = "hunter2-secret"
	good := mustToken(t, token.Token{HubHost: "h", HubPort: 1, EdgeID: "e", Secret: secret, HubCertSHA256: testPin})
	enc := func(js string) string { return base64.RawURLEncoding.EncodeToString([]byte(js)) }
	for raw, want := range map[string]string{
		`{"token":"` + good + `","hubHost":"h"}`:                                     "hubHost cannot be given with token",
		`{"token":"` + good + `","hubPort":8443}`:                                    "hubPort cannot be given with token",
		`{"token":"` + good + `","edgeId":"e"}`:                                      "edgeId cannot be given with token",
		`{"token":"` + good + `","secret":"` + secret + `"}`:                         "secret cannot be given with token",
		`{"token":"` + good + `","hubCertSha256":"` + strings.Repeat("1", 64) + `"}`: "hubCertSha256 differs from the certificate pin of the token (token)",
		`{"token":7}`:                             "token must be a string",
		`{"token":""}`:                            "token is empty",
		`{"token":"` + good + `!"}`:               "token is not base64url (or base64)",
		`{"token":"` + enc(`"`+secret+`"`) + `"}`: "token does not hold a JSON object",
		`{"token":"` + enc(`{"p":1,"e":"e","s":"`+secret+`"}`) + `"}`:                  `token has no hub host ("h")`,
		`{"token":"` + enc(`{"h":"h","p":0,"e":"e","s":"`+secret+`"}`) + `"}`:          `token hub port ("p") must be an integer 1-65535`,
		`{"token":"` + enc(`{"h":"h","p":1,"e":"e","s":["`+secret+`"]}`) + `"}`:        `token field "s" (secret) must be a string`,
		`{"token":"` + enc(`{"h":"h","p":1,"e":"e","s":"`+secret+`","f":"ab"}`) + `"}`: `token certificate pin ("f") must be a SHA-256 in hex (64 digits)`,
	} {
		_, err := decodeEdge(t, raw)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), good) {
			t.Errorf("%s: the error %q shows the secret or the token", raw, err)
		}
	}
}

func TestDecodeConnectionTokenRequest(t *testing.T) {
	for raw, want := range map[string]ConnectionTokenRequest{
		`{"edgeId":"e","hubHost":"hub"}`:                 {EdgeID: "e", HubHost: "hub"},
		`{"edgeId":"e","hubHost":"hub","hubPort":443}`:   {EdgeID: "e", HubHost: "hub", HubPort: 443},
		`{"edgeId":"e","hubHost":"hub","hubPort":null}`:  {EdgeID: "e", HubHost: "hub"},
		`{"edgeId":"e","hubHost":"hub","unknown":"yes"}`: {EdgeID: "e", HubHost: "hub"},
	} {
		r := json.RawMessage(raw)
		obj, _ := Parse(&r)
		got, err := DecodeConnectionTokenRequest(obj)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v", raw, got, err)
		}
	}
	for raw, want := range map[string]string{
		`{"hubHost":"hub"}`:                              "edgeId is required",
		`{"edgeId":"e"}`:                                 "hubHost is required",
		`{"edgeId":1,"hubHost":"hub"}`:                   "edgeId must be a string",
		`{"edgeId":"","hubHost":"hub"}`:                  "edgeId must not be empty",
		`{"edgeId":"e","hubHost":""}`:                    "hubHost must not be empty",
		`{"edgeId":"e","hubHost":"hub","hubPort":0}`:     "hubPort must be an integer 1-65535",
		`{"edgeId":"e","hubHost":"hub","hubPort":65536}`: "hubPort must be an integer 1-65535",
		`{"edgeId":"e","hubHost":"hub","hubPort":"443"}`: "hubPort must be an integer",
	} {
		r := json.RawMessage(raw)
		obj, _ := Parse(&r)
		if _, err := DecodeConnectionTokenRequest(obj); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}

// tokenErrorPrefixes are the forms an ExpandToken error may take: each
// names a param and says what is wrong, never what was given.
var tokenErrorPrefixes = []string{
	"token is ", "token does not", "token holds more", "token field ", "token has no ", "token hub port ",
	"token certificate pin ", "token must be a string", "token is longer",
	"hubHost cannot be given with token", "hubPort cannot be given with token", "edgeId cannot be given with token",
	"secret cannot be given with token", "hubCertSha256 differs", "hubCertSha256 must be a string",
}

const base64Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/="

func FuzzExpandToken(f *testing.F) {
	good, _ := token.Encode(token.Token{HubHost: "hub", HubPort: 8443, EdgeID: "e", Secret: "s3cr3t", HubCertSHA256: testPin})
	f.Add(good, `{}`)
	f.Add(good, `{"hubCertSha256":"`+testPin+`"}`)
	f.Add(good, `{"hubHost":"x"}`)
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"h":"a","p":1,"e":"b","s":"c"}`)), `{"listenPorts":[1]}`)
	f.Add("!!", `{"secret":null}`)
	f.Fuzz(func(t *testing.T, text, rest string) {
		var obj Object
		if err := json.Unmarshal([]byte(rest), &obj); err != nil || obj == nil {
			return
		}
		obj[TokenParam], _ = json.Marshal(text)
		before := make(Object, len(obj))
		for k, v := range obj {
			before[k] = v
		}
		err := ExpandToken(obj)
		if err != nil {
			msg := err.Error()
			ok := false
			for _, p := range tokenErrorPrefixes {
				ok = ok || strings.HasPrefix(msg, p)
			}
			if !ok || len(msg) > 120 {
				t.Fatalf("unexpected error form %q", msg)
			}
			// A token-like text (16 or more base64 characters) is never echoed.
			if tt := strings.TrimSpace(text); len(tt) >= 16 && strings.Trim(tt, base64Chars) == "" && strings.Contains(msg, tt) {
				t.Fatalf("the error %q shows the token", msg)
			}
			return
		}
		tok, derr := token.Decode(text)
		if derr != nil {
			t.Fatalf("ExpandToken accepted a token Decode refuses: %v", derr)
		}
		if _, left := obj[TokenParam]; left {
			t.Fatal("the token param is still there")
		}
		var got struct {
			HubHost string `json:"hubHost"`
			HubPort int    `json:"hubPort"`
			EdgeID  string `json:"edgeId"`
			Secret  string `json:"secret"`
			Pin     string `json:"hubCertSha256"`
		}
		b, _ := json.Marshal(obj)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("params after ExpandToken: %s: %v", b, err)
		}
		if got.HubHost != tok.HubHost || got.HubPort != tok.HubPort || got.EdgeID != tok.EdgeID || got.Secret != tok.Secret {
			t.Fatalf("params %+v, token %v", got, tok)
		}
		if tok.HubCertSHA256 != "" && got.Pin != tok.HubCertSHA256 {
			t.Fatalf("pin %q, token's %q", got.Pin, tok.HubCertSHA256)
		}
		for _, k := range TokenKeys {
			if _, had := before.value(k); had {
				t.Fatalf("ExpandToken accepted %s beside a token", k)
			}
		}
	})
}

func FuzzDecodeConnectionTokenRequest(f *testing.F) {
	f.Add(`{"edgeId":"e","hubHost":"hub","hubPort":443}`)
	f.Add(`{"edgeId":"e","hubHost":"hub"}`)
	f.Add(`{"edgeId":"","hubPort":1e9}`)
	f.Fuzz(func(t *testing.T, raw string) {
		r := json.RawMessage(raw)
		obj, err := Parse(&r)
		if err != nil {
			return
		}
		req, err := DecodeConnectionTokenRequest(obj)
		if err != nil {
			return
		}
		if req.EdgeID == "" || req.HubHost == "" || req.HubPort < 0 || req.HubPort > 65535 {
			t.Fatalf("accepted %+v", req)
		}
		// Whatever it accepts encodes, given a secret and a port.
		if req.HubPort == 0 {
			req.HubPort = 8443
		}
		if _, err := token.Encode(token.Token{HubHost: req.HubHost, HubPort: req.HubPort, EdgeID: req.EdgeID, Secret: "s"}); err != nil {
			t.Fatalf("%+v does not encode: %v", req, err)
		}
	})
}

// A token whose "h" lists several hubs gives hubs; "p" is the port of an
// entry that has none (CONTRACT section 12).
func TestExpandTokenWithSeveralHubs(t *testing.T) {
	tok := mustToken(t, token.Token{HubHost: "hub-a.example:8443, hub-b.example", HubPort: 9443, EdgeID: "e", Secret: "s"})
	cfg, err := decodeEdge(t, `{"token":"`+tok+`","listenPorts":[80]}`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HubHost != "" || strings.Join(cfg.Hubs, " ") != "hub-a.example:8443 hub-b.example" || cfg.HubPort != 9443 {
		t.Fatalf("decoded hubHost %q hubs %q hubPort %d", cfg.HubHost, cfg.Hubs, cfg.HubPort)
	}
	if _, err := decodeEdge(t, `{"token":"`+tok+`","hubs":["x:1"]}`); err == nil || !strings.Contains(err.Error(), "hubs cannot be given with token") {
		t.Fatalf("hubs beside a token: %v", err)
	}
}

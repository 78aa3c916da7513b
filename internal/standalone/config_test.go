package standalone

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/serve-zone/remoteingress/internal/token"
)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestEdgeSecretAndTokenSources(t *testing.T) {
	dir := t.TempDir()
	pin := strings.Repeat("ab", 32)
	tok, err := token.Encode(token.Token{HubHost: "hub", HubPort: 9, EdgeID: "e1", Secret: "tok-secret", HubCertSHA256: pin})
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "t", tok+"\n")
	ports := "listenPorts: [80]\nstunIntervalSecs: 0\n"

	// The secret from the environment.
	f, err := LoadEdge(write(t, dir, "a.yaml", "hubHost: h\nedgeId: e\n"+ports), EdgeSources{Getenv: env(map[string]string{EnvSecret: "env-secret"})})
	if err != nil || f.Edge.Secret != "env-secret" || f.Edge.HubPort != 8443 {
		t.Fatalf("%+v %v", f, err)
	}
	// The token from a file: identity and pin; GracePeriod defaults.
	f, err = LoadEdge(write(t, dir, "b.yaml", "tokenFile: t\n"+ports), EdgeSources{})
	if err != nil || f.Edge.HubHost != "hub" || f.Edge.HubPort != 9 || f.Edge.EdgeID != "e1" || f.Edge.Secret != "tok-secret" ||
		f.Edge.HubCertSHA256 != pin || f.GracePeriod != DefaultGracePeriod {
		t.Fatalf("%+v %v", f, err)
	}
	// The token from the environment, with no config file; --listen-ports.
	f, err = LoadEdge("", EdgeSources{ListenPorts: []int{443}, Getenv: env(map[string]string{EnvToken: tok})})
	if err != nil || f.Edge.EdgeID != "e1" || len(f.Edge.ListenPorts) != 1 || f.Edge.ListenPorts[0] != 443 {
		t.Fatalf("%+v %v", f, err)
	}
	for content, want := range map[string]string{
		"tokenFile: t\nedgeId: x\n" + ports:                                       ":2: edgeId cannot be given with a token (tokenFile)",
		"tokenFile: t\nhubCertSha256: " + strings.Repeat("cd", 32) + "\n" + ports: ":2: hubCertSha256 differs from the certificate pin",
		"hubHost: h\nedgeId: e\nsecret: s\nsecretFile: t\n" + ports:               ":4: secretFile cannot be given with secret",
		"tokenFile: missing\n" + ports:                                            ":1: tokenFile cannot be read",
	} {
		_, err := LoadEdge(write(t, dir, "c.yaml", content), EdgeSources{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", content, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "tok-secret") {
			t.Errorf("error %q shows the secret", err)
		}
	}
	bad := write(t, dir, "bad.token", "not a token")
	_, err = LoadEdge(write(t, dir, "d.yaml", ports), EdgeSources{TokenFile: bad})
	if err == nil || !strings.Contains(err.Error(), "--token-file token is not base64") {
		t.Errorf("bad --token-file: %v", err)
	}
}

func TestLineOf(t *testing.T) {
	d, err := parseDoc("f", []byte("a: 1\nlist:\n  - x: 1\n  - x: 2\n    secretFile: s\nseq: [1, 2]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"a": 1, "list": 2, "list[0]": 3, "list[1].x": 4, "list[1].secret": 5, "seq[1]": 6, "missing": 1, "list[9]": 2} {
		if got := d.lineOf(path); got != want {
			t.Errorf("lineOf(%q) = %d, want %d", path, got, want)
		}
	}
}

package standalone

import (
	"strings"
	"testing"

	"github.com/serve-zone/remoteingress/internal/token"
)

// startEdge's token param is not a file key: a token holds a secret, so a
// file names it (tokenFile); the error says so, without showing it.
func TestEdgeFileRefusesAnInlineToken(t *testing.T) {
	dir := t.TempDir()
	tok, err := token.Encode(token.Token{HubHost: "hub", HubPort: 9, EdgeID: "e1", Secret: "tok-secret"})
	if err != nil {
		t.Fatal(err)
	}
	path := write(t, dir, "e.yaml", "listenPorts: [80]\ntoken: "+tok+"\n")
	_, err = LoadEdge(path, EdgeSources{})
	if err == nil || !strings.Contains(err.Error(), ":2: token is not a known key (a token holds a secret: give it in tokenFile, --token-file or REMOTEINGRESS_TOKEN)") {
		t.Fatalf("inline token: %v", err)
	}
	if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), "tok-secret") {
		t.Fatalf("the error %q shows the token", err)
	}
	for _, k := range Keys(KindEdge) {
		if k == "token" {
			t.Fatal("token is an edge file key")
		}
	}
}

// proxyProtocol is a hub file key, validated as startHub validates it.
func TestHubFileProxyProtocol(t *testing.T) {
	dir := t.TempDir()
	f, err := LoadHub(write(t, dir, "h.yaml", "tunnelPort: 0\nproxyProtocol: v2\nallowedEdges: []\n"))
	if err != nil || f.Hub.ProxyProtocol != "v2" {
		t.Fatalf("proxyProtocol v2: %+v, %v", f, err)
	}
	if f, err = LoadHub(write(t, dir, "d.yaml", "tunnelPort: 0\nallowedEdges: []\n")); err != nil || f.Hub.ProxyProtocol != "v1" {
		t.Fatalf("default proxyProtocol: %+v, %v", f, err)
	}
	_, err = LoadHub(write(t, dir, "bad.yaml", "tunnelPort: 0\nallowedEdges: []\nproxyProtocol: v3\n"))
	if err == nil || !strings.HasSuffix(err.Error(), `bad.yaml:3: proxyProtocol must be "v1" or "v2"`) {
		t.Fatalf("proxyProtocol v3: %v", err)
	}
	if kind, err := Detect(write(t, dir, "k.yaml", "proxyProtocol: v2\n")); err != nil || kind != KindHub {
		t.Fatalf("Detect: %v, %v", kind, err)
	}
}

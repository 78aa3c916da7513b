package bridge

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel"
)

// httpGet returns the status and body of GET http://addr/path, or 0 when
// nothing answers.
func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricsAddress reads metricsAddress from a start result.
func metricsAddress(t *testing.T, result json.RawMessage) string {
	t.Helper()
	var r struct {
		MetricsAddress string `json:"metricsAddress"`
	}
	if err := json.Unmarshal(result, &r); err != nil || r.MetricsAddress == "" {
		t.Fatalf("no metricsAddress in %s", result)
	}
	return r.MetricsAddress
}

// TestMetricsListenOfHubAndEdge: metricsListen starts a listener beside
// the engine, in both dialects; a hub and an edge naming the same address
// share it, each side's series come and go with it, and the last stop
// closes it.
func TestMetricsListenOfHubAndEdge(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		const secret = "bridge-metrics-secret-51c2"
		s := startSession(t, d, tunnelEngine())
		s.skipReady()

		r := s.mustCall("startHub", map[string]any{"tunnelPort": 0, "listenHost": "127.0.0.1", "targetHost": "127.0.0.2",
			"metricsListen": "127.0.0.1:0"})
		addr := metricsAddress(t, r)
		var started struct {
			TunnelPort int `json:"tunnelPort"`
		}
		_ = json.Unmarshal(r, &started)
		if c, _ := httpGet(t, addr, "/healthz"); c != http.StatusOK {
			t.Fatalf("/healthz = %d", c)
		}
		if c, body := httpGet(t, addr, "/readyz"); c != http.StatusServiceUnavailable {
			t.Fatalf("/readyz of a hub without an allowed list = %d %s", c, body)
		}
		s.mustCall("updateAllowedEdges", edgesParam("edge-1", secret))
		if c, _ := httpGet(t, addr, "/readyz"); c != http.StatusOK {
			t.Fatalf("/readyz of a hub with its list = %d", c)
		}

		// The edge names the hub's address: one server reports both.
		ep := realEdgeParams(started.TunnelPort, testutil.FreePort(t), secret)
		ep["metricsListen"] = addr
		if got := metricsAddress(t, s.mustCall("startEdge", ep)); got != addr {
			t.Fatalf("the edge's metricsAddress %s, the hub's %s", got, addr)
		}
		var body string
		testutil.Eventually(t, 10*time.Second, "/readyz 200 and the edge connected at the hub", func() bool {
			c, _ := httpGet(t, addr, "/readyz")
			_, body = httpGet(t, addr, "/metrics")
			return c == http.StatusOK && strings.Contains(body, "remoteingress_hub_edges_connected 1")
		})
		for _, want := range []string{`remoteingress_build_info{version="1.2.3-test"`, "remoteingress_hub_edges_connected 1",
			`remoteingress_edge_tunnel_up{edge_id="edge-1"} 1`, `remoteingress_streams_total{side="hub",edge_id="edge-1"} 0`,
			`remoteingress_streams_total{side="edge",edge_id="edge-1"} 0`} {
			if !strings.Contains(body, want) {
				t.Fatalf("/metrics has no %s:\n%s", want, body)
			}
		}
		if strings.Contains(body, secret) {
			t.Fatal("/metrics shows the secret")
		}

		// stopHub: the hub's series go, the edge's stay.
		s.mustCall("stopHub", nil)
		_, body = httpGet(t, addr, "/metrics")
		if strings.Contains(body, "remoteingress_hub_") || !strings.Contains(body, "remoteingress_edge_tunnel_up") {
			t.Fatalf("after stopHub:\n%s", body)
		}
		// stopEdge, the last user: the listener closes.
		s.mustCall("stopEdge", nil)
		if c, _ := httpGet(t, addr, "/healthz"); c != 0 {
			t.Fatalf("/healthz after both stopped = %d, want no answer", c)
		}
	})
}

// TestMetricsListenOnATakenPortChangesNothing: the start fails, naming the
// address, and no engine is started.
func TestMetricsListenOnATakenPortChangesNothing(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		r := s.call("startHub", map[string]any{"tunnelPort": 0, "metricsListen": addr})
		if r.ok || !strings.Contains(r.message, addr) {
			t.Fatalf("startHub on a taken metrics port: %+v", r)
		}
		r = s.call("startEdge", map[string]any{"hubHost": "127.0.0.1", "edgeId": "e", "secret": "x", "listenPorts": []int{1},
			"metricsListen": addr})
		if r.ok || !strings.Contains(r.message, addr) {
			t.Fatalf("startEdge on a taken metrics port: %+v", r)
		}
		if n, m := len(eng.hubStartCalls()), len(eng.edgeStartCalls()); n != 0 || m != 0 {
			t.Fatalf("engines started: %d hubs, %d edges", n, m)
		}
		if diff := diffFields(t, `{"running":false}`, s.mustCall("getHubStatus", nil)); diff != "" {
			t.Fatal(diff)
		}
		// A bad address is a params error.
		r = s.call("startHub", map[string]any{"metricsListen": "9100"})
		if r.ok || !strings.Contains(r.message, "metricsListen") {
			t.Fatalf("startHub with metricsListen 9100: %+v", r)
		}
		// And the hub starts when the address is free.
		r = s.call("startHub", map[string]any{"tunnelPort": 0, "metricsListen": "127.0.0.1:0"})
		if !r.ok {
			t.Fatalf("startHub: %+v", r)
		}
	})
}

// TestFailedStartReleasesTheMetricsListener: when the engine fails to
// start, the listener bound for it is closed again.
func TestFailedStartReleasesTheMetricsListener(t *testing.T) {
	eng := &fakeEngine{startHubErr: errors.New("cannot listen on tunnel port 1"), startEdgeErr: errors.New("cannot listen on port 1")}
	mons := &monitors{version: "v"}
	hub := newHubRole(eng.engine(), discardLogger(), nil, mons)
	edge := newEdgeRole(eng.engine(), discardLogger(), nil, mons)
	if _, _, err := hub.start(tunnel.HubConfig{MetricsListen: "127.0.0.1:0"}); err == nil {
		t.Fatal("hub start succeeded")
	}
	if _, err := edge.start(tunnel.EdgeConfig{MetricsListen: "127.0.0.1:0"}); err == nil {
		t.Fatal("edge start succeeded")
	}
	mons.mu.Lock()
	n := len(mons.servers)
	mons.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d metrics servers left running", n)
	}
}

// TestMetricsListenersAreSharedOnlyByAddress: port 0 binds a new server
// each time; a named address is shared and closed after its last user.
func TestMetricsListenersAreSharedOnlyByAddress(t *testing.T) {
	mons := &monitors{version: "v"}
	acquire := func(addr string) *monitorUse {
		t.Helper()
		u, err := mons.acquire(addr)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	a, b := acquire("127.0.0.1:0"), acquire("127.0.0.1:0")
	if a.srv == b.srv {
		t.Fatal("two port-0 requests share a server")
	}
	c := acquire(a.srv.Addr())
	if c.srv != a.srv {
		t.Fatalf("a second use of %s binds another server", a.srv.Addr())
	}
	a.end(nil)
	a.end(nil) // once only
	if code, _ := httpGet(t, a.srv.Addr(), "/healthz"); code != http.StatusOK {
		t.Fatal("released while still used")
	}
	c.end(nil)
	b.end(nil)
	for _, u := range []*monitorUse{a, b} {
		if code, _ := httpGet(t, u.srv.Addr(), "/healthz"); code != 0 {
			t.Fatalf("%s still answers", u.srv.Addr())
		}
	}
	var none *monitorUse
	none.end(nil)
	if none.attach(nil, discardLogger()) != "" {
		t.Fatal("a nil use has an address")
	}
}

// TestMetricsListenerClosesAtExit: when the parent goes (stdin closes), the
// shutdown closes the metrics listener with the engines.
func TestMetricsListenerClosesAtExit(t *testing.T) {
	s := startSession(t, Management, tunnelEngine())
	s.skipReady()
	addr := metricsAddress(t, s.mustCall("startHub", map[string]any{"tunnelPort": 0, "listenHost": "127.0.0.1",
		"metricsListen": "127.0.0.1:0"}))
	if c, _ := httpGet(t, addr, "/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz = %d", c)
	}
	s.closeInput()
	if err := s.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c, _ := httpGet(t, addr, "/healthz"); c != 0 {
		t.Fatalf("/healthz after exit = %d, want no answer", c)
	}
}

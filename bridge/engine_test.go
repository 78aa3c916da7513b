package bridge

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// These tests drive the real engine of package tunnel through the bridge.

// notImplemented skips the test while the engine is a stub.
func notImplemented(t *testing.T, r reply) {
	t.Helper()
	if !r.ok && r.message == "not implemented yet" {
		t.Skip("the engine is not implemented yet")
	}
}

// closedPort returns a TCP port on 127.0.0.1 with nothing listening.
func closedPort(t *testing.T) int { return testutil.FreePort(t) }

// realEdgeParams are startEdge params for the real engine, all on 127.0.0.1, without STUN.
func realEdgeParams(hubPort, listenPort int, secret string) map[string]any {
	return map[string]any{
		"hubHost": "127.0.0.1", "hubPort": hubPort, "edgeId": "edge-1", "secret": secret,
		"listenPorts": []int{listenPort}, "listenHost": "127.0.0.1", "stunIntervalSecs": 0,
	}
}

func TestRealHubAndEdgeThroughTheBridge(t *testing.T) {
	const secret = "bridge-test-secret-7f3a"
	s := startSession(t, Management, tunnelEngine())
	s.skipReady()

	s.mustCall("updateAllowedEdges", edgesParam("edge-1", secret))
	r := s.call("startHub", map[string]any{"tunnelPort": 0, "listenHost": "127.0.0.1", "targetHost": "127.0.0.2"})
	notImplemented(t, r)
	if !r.ok {
		t.Fatalf("startHub: %s", r.message)
	}
	var started struct {
		Started    bool `json:"started"`
		TunnelPort int  `json:"tunnelPort"`
	}
	if err := json.Unmarshal(r.result, &started); err != nil || !started.Started || started.TunnelPort <= 0 {
		t.Fatalf("startHub result %s", r.result)
	}
	if r := s.call("startHub", map[string]any{"tunnelPort": 0}); r.ok || r.message != "hub is already running" {
		t.Fatalf("second startHub: %+v", r)
	}

	listen := testutil.FreePort(t)
	s.mustCall("startEdge", realEdgeParams(started.TunnelPort, listen, secret))
	isEvent := func(name string) func(msg) bool { return func(m msg) bool { return m.Event == name } }
	if m := s.waitFor(isEvent("edgeConnected")); !strings.Contains(string(m.Data), `"edgeId":"edge-1"`) {
		t.Fatalf("edgeConnected: %s", m.raw)
	}
	s.waitFor(isEvent("tunnelConnected"))

	hub := s.mustCall("getHubStatus", nil)
	var hs struct {
		Running        bool `json:"running"`
		TunnelPort     int  `json:"tunnelPort"`
		ConnectedEdges []struct {
			EdgeID      string `json:"edgeId"`
			ConnectedAt int64  `json:"connectedAt"`
		} `json:"connectedEdges"`
	}
	if err := json.Unmarshal(hub, &hs); err != nil || !hs.Running || hs.TunnelPort != started.TunnelPort ||
		len(hs.ConnectedEdges) != 1 || hs.ConnectedEdges[0].EdgeID != "edge-1" || hs.ConnectedEdges[0].ConnectedAt == 0 {
		t.Fatalf("getHubStatus %s", hub)
	}
	edge := s.mustCall("getEdgeStatus", nil)
	if diff := diffFields(t, `{"running":true,"connected":true,"listenPorts":[`+strconv.Itoa(listen)+`]}`, edge); diff != "" {
		t.Fatalf("getEdgeStatus (-want +got):\n%s", diff)
	}

	// Revoking the edge disconnects it at once.
	s.mustCall("updateAllowedEdges", edgesParam())
	if m := s.waitFor(isEvent("edgeDisconnected")); !strings.Contains(string(m.Data), `"edgeId":"edge-1"`) {
		t.Fatalf("edgeDisconnected: %s", m.raw)
	}
	s.mustCall("stopEdge", nil)
	s.mustCall("stopHub", nil)
	if diff := diffFields(t, `{"running":false,"tunnelPort":0,"connectedEdges":[]}`, s.mustCall("getHubStatus", nil)); diff != "" {
		t.Fatalf("getHubStatus after stop (-want +got):\n%s", diff)
	}
	s.finish(t, secret)
}

func TestRealEdgeWithUnreachableHub(t *testing.T) {
	const secret = "unreachable-secret-91bc"
	s := startSession(t, JSONRPC, tunnelEngine())
	s.skipReady()
	listen := testutil.FreePort(t)
	r := s.call("startEdge", realEdgeParams(closedPort(t), listen, secret))
	notImplemented(t, r)
	if !r.ok {
		t.Fatalf("startEdge: %s", r.message)
	}
	if diff := diffFields(t, `{"running":true,"connected":false,"listenPorts":[`+strconv.Itoa(listen)+`]}`, s.mustCall("getEdgeStatus", nil)); diff != "" {
		t.Fatalf("getEdgeStatus (-want +got):\n%s", diff)
	}
	if r := s.call("startEdge", realEdgeParams(closedPort(t), testutil.FreePort(t), secret)); r.ok || r.message != "edge is already running" {
		t.Fatalf("second startEdge: %+v", r)
	}
	s.mustCall("stopEdge", nil)
	s.finish(t, secret)
}

func TestRealPortInUseIsNamed(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	s := startSession(t, JSONRPC, tunnelEngine())
	s.skipReady()

	r := s.call("startHub", map[string]any{"tunnelPort": port, "listenHost": "127.0.0.1"})
	notImplemented(t, r)
	if r.ok || r.code != CodeOperationFailed || !strings.Contains(r.message, strconv.Itoa(port)) {
		t.Fatalf("startHub on a busy port: %+v", r)
	}
	r = s.call("startEdge", realEdgeParams(closedPort(t), port, "x"))
	notImplemented(t, r)
	if r.ok || r.code != CodeOperationFailed || !strings.Contains(r.message, strconv.Itoa(port)) {
		t.Fatalf("startEdge on a busy port: %+v", r)
	}
	// Nothing is left running after the failures.
	if diff := diffFields(t, `{"running":false}`, s.mustCall("getHubStatus", nil)); diff != "" {
		t.Fatal(diff)
	}
	if diff := diffFields(t, `{"running":false}`, s.mustCall("getEdgeStatus", nil)); diff != "" {
		t.Fatal(diff)
	}
}

// The hub assigns an edge that was started without ports its ports over
// the tunnel, changes them, and the edge reports what it could bind.
func TestRealHubAssignsEdgePorts(t *testing.T) {
	const secret = "assign-secret-4e21"
	s := startSession(t, Management, tunnelEngine())
	s.skipReady()
	first, second := testutil.FreePort(t), testutil.FreePort(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	entry := func(ports ...int) map[string]any {
		return map[string]any{"edges": []any{map[string]any{"id": "edge-1", "secret": secret, "listenPorts": ports,
			"firewall": map[string]any{"blockedIps": []string{"127.0.0.9"}}}}}
	}
	s.mustCall("updateAllowedEdges", entry(first))
	var started struct {
		TunnelPort int `json:"tunnelPort"`
	}
	if err := json.Unmarshal(s.mustCall("startHub", map[string]any{"tunnelPort": 0, "listenHost": "127.0.0.1"}), &started); err != nil {
		t.Fatal(err)
	}
	params := realEdgeParams(started.TunnelPort, 0, secret)
	delete(params, "listenPorts")
	params["firewallBackend"] = "process"
	s.mustCall("startEdge", params)
	isEvent := func(name string) func(msg) bool { return func(m msg) bool { return m.Event == name } }
	assigned := func(ports int) func(msg) bool {
		return func(m msg) bool {
			return m.Event == "portsAssigned" && string(m.Data) == `{"listenPorts":[`+strconv.Itoa(ports)+`],"listenPortsUdp":[]}`
		}
	}
	s.waitFor(assigned(first))
	s.waitFor(isEvent("tunnelConnected"))
	if diff := diffFields(t, `{"connected":true,"listenPorts":[`+strconv.Itoa(first)+`],"listenPortsUdp":[],"firewallRefused":0}`, s.mustCall("getEdgeStatus", nil)); diff != "" {
		t.Fatalf("getEdgeStatus (-want +got):\n%s", diff)
	}
	testutil.Eventually(t, 5*time.Second, "the hub to show the edge's ports", func() bool {
		return strings.Contains(string(s.mustCall("getHubStatus", nil)), `"listenPorts":[`+strconv.Itoa(first)+`],"listenPortsUdp":[]`)
	})

	s.mustCall("updateAllowedEdges", entry(busyPort, second))
	m := s.waitFor(isEvent("portError"))
	if want := `{"port":` + strconv.Itoa(busyPort) + `,"protocol":"tcp","error":"cannot listen on TCP port ` + strconv.Itoa(busyPort); !strings.HasPrefix(string(m.Data), want) {
		t.Fatalf("portError %s, want it to start with %s", m.Data, want)
	}
	if diff := diffFields(t, `{"listenPorts":[`+strconv.Itoa(second)+`]}`, s.mustCall("getEdgeStatus", nil)); diff != "" {
		t.Fatalf("getEdgeStatus after the change (-want +got):\n%s", diff)
	}
	s.mustCall("stopEdge", nil)
	s.mustCall("stopHub", nil)
	s.finish(t, secret)
}

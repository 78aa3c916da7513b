package bridge

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/serve-zone/remoteingress/tunnel"
	"github.com/sourcegraph/jsonrpc2"
)

// decode turns a raw result into generic JSON for cmp.
func decode(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("result %s: %v", raw, err)
	}
	return v
}

// diffFields compares the members of want with the same members of got;
// further members in got are welcome (the contract allows more fields).
func diffFields(t *testing.T, want string, got json.RawMessage) string {
	t.Helper()
	w, ok := jsonOf(t, want).(map[string]any)
	g, ok2 := decode(t, got).(map[string]any)
	if !ok || !ok2 {
		t.Fatalf("not objects: %s / %s", want, got)
	}
	sub := map[string]any{}
	for k := range w {
		if v, ok := g[k]; ok {
			sub[k] = v
		}
	}
	return cmp.Diff(w, sub)
}

// jsonOf is decode of a literal.
func jsonOf(t *testing.T, s string) any {
	t.Helper()
	return decode(t, json.RawMessage(s))
}

func TestStatusWhenNothingRuns(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		hub := s.mustCall("getHubStatus", nil)
		if diff := diffFields(t, `{"running":false,"tunnelPort":0,"connectedEdges":[],"eventsDropped":0}`, hub); diff != "" {
			t.Errorf("getHubStatus (-want +got):\n%s", diff)
		}
		edge := s.mustCall("getEdgeStatus", map[string]any{})
		if diff := diffFields(t, `{"running":false,"connected":false,"publicIp":null,"activeStreams":0,"listenPorts":[],"eventsDropped":0}`, edge); diff != "" {
			t.Errorf("getEdgeStatus (-want +got):\n%s", diff)
		}
	})
}

func TestStatusWhileRunning(t *testing.T) {
	ip := "203.0.113.7"
	eng := &fakeEngine{
		newHub: func() *fakeHub {
			return &fakeHub{port: 9443, status: tunnel.HubStatus{Running: true, TunnelPort: 9443}}
		},
		newEdge: func() *fakeEdge {
			return &fakeEdge{status: tunnel.EdgeStatus{Running: true, Connected: true, PublicIP: &ip, ActiveStreams: 2, ListenPorts: []int{80}}}
		},
	}
	s := startSession(t, Management, eng.engine())
	s.skipReady()
	s.mustCall("startHub", map[string]any{"tunnelPort": 0})
	s.mustCall("startEdge", edgeParams(80))
	if diff := diffFields(t, `{"running":true,"tunnelPort":9443,"connectedEdges":[],"eventsDropped":0}`, s.mustCall("getHubStatus", nil)); diff != "" {
		t.Errorf("getHubStatus (-want +got):\n%s", diff)
	}
	if diff := diffFields(t, `{"running":true,"connected":true,"publicIp":"203.0.113.7","activeStreams":2,"listenPorts":[80],"eventsDropped":0}`, s.mustCall("getEdgeStatus", nil)); diff != "" {
		t.Errorf("getEdgeStatus (-want +got):\n%s", diff)
	}
	s.mustCall("stopHub", nil)
	s.mustCall("stopEdge", nil)
	if !eng.lastHub().isClosed() || !eng.lastEdge().isClosed() {
		t.Fatal("stop did not close the engines")
	}
	if diff := diffFields(t, `{"running":false,"tunnelPort":0,"connectedEdges":[],"eventsDropped":0}`, s.mustCall("getHubStatus", nil)); diff != "" {
		t.Errorf("getHubStatus after stop (-want +got):\n%s", diff)
	}
}

// edgeParams are valid startEdge params.
func edgeParams(ports ...int) map[string]any {
	return map[string]any{"hubHost": "127.0.0.1", "edgeId": "edge-1", "secret": "s3cr3t-edge", "listenPorts": ports}
}

// with returns a copy of p with k set to v (nil deletes k).
func with(p map[string]any, k string, v any) map[string]any {
	c := make(map[string]any, len(p))
	for pk, pv := range p {
		c[pk] = pv
	}
	if v == nil {
		delete(c, k)
	} else {
		c[k] = v
	}
	return c
}

func TestInvalidParams(t *testing.T) {
	valid := edgeParams(80, 443)
	cases := []struct {
		method string
		params any
		want   string
	}{
		{"startEdge", with(valid, "hubHost", nil), "startEdge: hubHost is required"},
		{"startEdge", with(valid, "hubHost", ""), "startEdge: hubHost must not be empty"},
		{"startEdge", with(valid, "hubHost", 5), "startEdge: hubHost must be a string"},
		{"startEdge", with(valid, "edgeId", nil), "startEdge: edgeId is required"},
		{"startEdge", with(valid, "secret", nil), "startEdge: secret is required"},
		{"startEdge", with(valid, "secret", true), "startEdge: secret must be a string"},
		{"startEdge", with(valid, "listenPortsUdp", []any{53, 53}), "startEdge: listenPortsUdp lists port 53 twice"},
		{"startEdge", with(valid, "hubs", []any{"a:1"}), "startEdge: hubs cannot be given with hubHost"},
		{"startEdge", with(with(valid, "hubHost", nil), "hubs", []any{"a:1", 7}), "startEdge: hubs[1] must be a string"},
		{"startEdge", with(with(valid, "hubHost", nil), "hubs", "a:1"), "startEdge: hubs must be an array of strings"},
		{"startEdge", with(with(valid, "hubHost", nil), "hubs", []any{"a:0"}), `startEdge: hubs[0] has port "0": must be an integer 1-65535`},
		{"startEdge", with(valid, "hubMode", "random"), `startEdge: hubMode must be "spread" or "failover"`},
		{"startEdge", with(valid, "transport", "udp"), `startEdge: transport must be "tls", "quic" or "auto"`},
		{"startEdge", with(valid, "transport", 1), `startEdge: transport must be a string`},
		{"startEdge", with(valid, "quicFallbackMs", 0), `startEdge: quicFallbackMs must be an integer 1-2147483647`},
		{"startEdge", with(valid, "quicFallbackMs", "3s"), `startEdge: quicFallbackMs must be an integer 1-2147483647`},
		{"startEdge", with(valid, "listenPortsUdp", []any{0}), "startEdge: listenPortsUdp[0] must be an integer 1-65535"},
		{"startEdge", with(valid, "firewallBackend", "iptables"), `startEdge: firewallBackend must be "auto" or "process"`},
		{"startEdge", with(valid, "listenPorts", []any{80.5}), "startEdge: listenPorts[0] must be an integer"},
		{"startEdge", with(valid, "listenPorts", []any{0}), "startEdge: listenPorts[0] must be an integer 1-65535"},
		{"startEdge", with(valid, "listenPorts", []any{80, 443, 65536}), "startEdge: listenPorts[2] must be an integer 1-65535"},
		{"startEdge", with(valid, "listenPorts", []any{80, 1e100}), "startEdge: listenPorts[1] must be an integer 1-65535"},
		{"startEdge", with(valid, "listenPorts", []any{80, "443"}), "startEdge: listenPorts[1] must be an integer"},
		{"startEdge", with(valid, "listenPorts", 80), "startEdge: listenPorts must be an array of integers"},
		{"startEdge", with(valid, "listenPorts", []any{80, 80}), "startEdge: listenPorts lists port 80 twice"},
		{"startEdge", with(valid, "hubPort", 0), "startEdge: hubPort must be an integer 1-65535"},
		{"startEdge", with(valid, "hubPort", 65536), "startEdge: hubPort must be an integer 1-65535"},
		{"startEdge", with(valid, "hubPort", 8443.5), "startEdge: hubPort must be an integer"},
		{"startEdge", with(valid, "hubPort", "8443"), "startEdge: hubPort must be an integer"},
		{"startEdge", with(valid, "edgeId", ""), "startEdge: edgeId must not be empty"},
		{"startEdge", with(valid, "edgeId", strings.Repeat("e", 256)), "startEdge: edgeId must be at most 255 bytes"},
		{"startEdge", with(valid, "secret", ""), "startEdge: secret must not be empty"},
		{"startEdge", with(valid, "hubCertSha256", "abc"), "startEdge: hubCertSha256 must be 64 hex digits (a SHA-256)"},
		{"startEdge", with(valid, "hubCa", "not PEM"), "startEdge: hubCa holds no PEM certificate"},
		{"startEdge", with(valid, "stunIntervalSecs", -1), "startEdge: stunIntervalSecs must be an integer 0-2147483647"},
		{"startEdge", with(valid, "stunIntervalSecs", 1.5), "startEdge: stunIntervalSecs must be an integer 0-2147483647"},
		{"startEdge", with(valid, "tunnelConnections", 0), "startEdge: tunnelConnections must be an integer 1-16"},
		{"startEdge", with(valid, "tunnelConnections", 17), "startEdge: tunnelConnections must be an integer 1-16"},
		{"startEdge", with(valid, "tunnelConnections", "2"), "startEdge: tunnelConnections must be an integer"},
		{"startEdge", with(valid, "stunServer", 1), "startEdge: stunServer must be a string"},
		{"startEdge", with(valid, "listenHost", []any{}), "startEdge: listenHost must be a string"},
		{"startEdge", []any{1, 2}, "startEdge: params must be a JSON object"},
		{"startEdge", "x", "startEdge: params must be a JSON object"},
		{"startHub", map[string]any{"tunnelPort": -1}, "startHub: tunnelPort must be an integer 0-65535"},
		{"startHub", map[string]any{"tunnelPort": 65536}, "startHub: tunnelPort must be an integer 0-65535"},
		{"startHub", map[string]any{"tunnelPort": 1e100}, "startHub: tunnelPort must be an integer 0-65535"},
		{"startHub", map[string]any{"targetHost": false}, "startHub: targetHost must be a string"},
		{"startHub", map[string]any{"quic": "no"}, "startHub: quic must be true or false"},
		{"startHub", map[string]any{"tunnelPort": 8443.5}, "startHub: tunnelPort must be an integer"},
		{"startHub", map[string]any{"tlsCertPem": "-----BEGIN CERTIFICATE-----"}, "startHub: tlsKeyPem must be given together with tlsCertPem"},
		{"startHub", map[string]any{"tlsKeyPem": "-----BEGIN PRIVATE KEY-----"}, "startHub: tlsCertPem must be given together with tlsKeyPem"},
		{"updateAllowedEdges", nil, "updateAllowedEdges: edges is required"},
		{"updateAllowedEdges", map[string]any{"edges": "x"}, "updateAllowedEdges: edges must be an array of {id, secret} objects"},
		{"updateAllowedEdges", map[string]any{"edges": []any{"x"}}, "updateAllowedEdges: edges[0] must be an object {id, secret}"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": 1, "secret": "s"}}}, "updateAllowedEdges: edges[0].id must be a string"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a"}}}, `updateAllowedEdges: edges[0].secret is required (edge "a")`},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": 7}}}, `updateAllowedEdges: edges[0].secret must be a string (edge "a")`},
		{"updateAllowedEdges", edgesParam("a", "1", strings.Repeat("i", 256), "2"), "updateAllowedEdges: edges[1].id must be at most 255 bytes"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "listenPorts": []any{80, 0}}}}, "updateAllowedEdges: edges[0].listenPorts[1] must be an integer 1-65535 (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "listenPorts": []any{80, 80}}}}, "updateAllowedEdges: edges[0].listenPorts lists port 80 twice (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "listenPortsUdp": "53"}}}, "updateAllowedEdges: edges[0].listenPortsUdp must be an array of integers (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "listenPortsUdp": []any{53.5}}}}, "updateAllowedEdges: edges[0].listenPortsUdp[0] must be an integer (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "firewall": "none"}}}, "updateAllowedEdges: edges[0].firewall must be an object {blockedIps, allowedIps, maxConnectionsPerIp, connectionRatePerIp} (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "firewall": map[string]any{"blockedIp": []any{"10.0.0.1"}}}}}, "updateAllowedEdges: edges[0].firewall.blockedIp is not a firewall rule (known: blockedIps, allowedIps, maxConnectionsPerIp, connectionRatePerIp) (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "firewall": map[string]any{"blockedIps": []any{"10.0.0.0/8", "300.1.1.1"}}}}}, "updateAllowedEdges: edges[0].firewall.blockedIps[1] is not an IP address or CIDR: \"300.1.1.1\" (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "firewall": map[string]any{"allowedIps": "10.0.0.1"}}}}, "updateAllowedEdges: edges[0].firewall.allowedIps must be an array of strings (IPs or CIDRs) (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "firewall": map[string]any{"maxConnectionsPerIp": -1}}}}, "updateAllowedEdges: edges[0].firewall.maxConnectionsPerIp must not be negative (edge \"a\")"},
		{"updateAllowedEdges", map[string]any{"edges": []any{map[string]any{"id": "a", "secret": "s", "firewall": map[string]any{"connectionRatePerIp": 1.5}}}}, "updateAllowedEdges: edges[0].firewall.connectionRatePerIp must be an integer (edge \"a\")"},
	}
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		for _, c := range cases {
			r := s.call(c.method, c.params)
			if r.ok || r.message != c.want {
				t.Errorf("%s %v: got ok=%v %q, want %q", c.method, c.params, r.ok, r.message, c.want)
			}
			if d == JSONRPC && r.code != jsonrpc2.CodeInvalidParams {
				t.Errorf("%s %v: code %d, want %d", c.method, c.params, r.code, jsonrpc2.CodeInvalidParams)
			}
		}
		if n, m := len(eng.hubStartCalls()), len(eng.edgeStartCalls()); n+m != 0 {
			t.Fatalf("invalid params reached the engine: %d hub and %d edge starts", n, m)
		}
		if out := s.out.String() + s.logs.String(); strings.Contains(out, "s3cr3t-edge") {
			t.Fatalf("a secret was written:\n%s", out)
		}
	})
}

// ignoreFuncs leaves the logger, the event sink and the engine's own
// unexported tuning out of config comparisons.
var ignoreFuncs = []cmp.Option{
	cmpopts.IgnoreFields(tunnel.HubConfig{}, "Logger", "Events"),
	cmpopts.IgnoreFields(tunnel.EdgeConfig{}, "Logger", "Events"),
	cmpopts.IgnoreUnexported(tunnel.Tuning{}),
}

func TestStartHubParams(t *testing.T) {
	eng := &fakeEngine{}
	s := startSession(t, Management, eng.engine())
	s.skipReady()

	res := s.mustCall("startHub", map[string]any{"extra": "ignored"})
	if diff := cmp.Diff(jsonOf(t, `{"started":true,"tunnelPort":40001,"quicPort":0}`), decode(t, res)); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	r := s.call("startHub", nil)
	if r.ok || r.message != "hub is already running" {
		t.Fatalf("second startHub: %+v", r)
	}
	s.mustCall("stopHub", nil)
	s.mustCall("startHub", map[string]any{
		"tunnelPort": 0, "targetHost": "127.0.0.2", "listenHost": "127.0.0.1",
		"tlsCertPem": "CERT", "tlsKeyPem": "KEY", "quic": false,
	})
	calls := eng.hubStartCalls()
	// Absent params take the engine's defaults.
	custom := tunnel.DefaultHubConfig()
	custom.TunnelPort, custom.TargetHost, custom.ListenHost, custom.TLSCertPEM, custom.TLSKeyPEM = 0, "127.0.0.2", "127.0.0.1", "CERT", "KEY"
	custom.DisableQUIC = true
	want := []tunnel.HubConfig{tunnel.DefaultHubConfig(), custom}
	if d := want[0]; d.TunnelPort != 8443 || d.TargetHost != "127.0.0.1" {
		t.Fatalf("the engine's hub defaults are not the documented ones: %+v", d)
	}
	var got []tunnel.HubConfig
	for _, c := range calls {
		got = append(got, c.cfg)
		if c.cfg.Logger == nil || c.cfg.Events == nil {
			t.Errorf("the engine got no logger or event sink")
		}
	}
	if diff := cmp.Diff(want, got, ignoreFuncs...); diff != "" {
		t.Errorf("hub configs (-want +got):\n%s", diff)
	}
	if strings.Contains(s.logs.String(), "KEY") {
		t.Errorf("the TLS key was logged")
	}
}

func TestStartEdgeParams(t *testing.T) {
	eng := &fakeEngine{}
	s := startSession(t, JSONRPC, eng.engine())
	s.skipReady()

	res := s.mustCall("startEdge", with(edgeParams(80, 443), "unknown", 1))
	if diff := cmp.Diff(jsonOf(t, `{"started":true}`), decode(t, res)); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	r := s.call("startEdge", edgeParams(80))
	if r.ok || r.message != "edge is already running" || r.code != CodeOperationFailed {
		t.Fatalf("second startEdge: %+v", r)
	}
	s.mustCall("stopEdge", nil)
	s.mustCall("startEdge", with(edgeParams(80), "stunIntervalSecs", 0))
	s.mustCall("stopEdge", nil)
	s.mustCall("startEdge", map[string]any{
		"hubHost": "hub.example", "hubPort": 9000, "edgeId": "e2", "secret": "x",
		"listenPorts": []any{8080.0}, "listenHost": "127.0.0.1", "stunIntervalSecs": 5, "stunServer": "127.0.0.1:3478",
		"tunnelConnections": 3,
	})
	s.mustCall("stopEdge", nil)
	s.mustCall("startEdge", map[string]any{
		"hubs": []any{"hub-a.example:8443", "hub-b.example"}, "hubMode": "failover", "hubPort": 9443,
		"edgeId": "e3", "secret": "y", "listenPorts": []any{80}, "transport": "auto", "quicFallbackMs": 1500,
	})
	// Absent params take the engine's defaults, which are the documented ones.
	edge := func(f func(c *tunnel.EdgeConfig)) tunnel.EdgeConfig {
		c := tunnel.DefaultEdgeConfig()
		if c.HubPort != 8443 || c.StunServer != "stun.cloudflare.com:3478" || c.StunInterval != 300*time.Second || c.Connections != 2 ||
			c.Transport != "tls" || c.QUICFallback != 3*time.Second {
			t.Fatalf("the engine's edge defaults are not the documented ones: %+v", c)
		}
		c.HubHost, c.EdgeID, c.Secret = "127.0.0.1", "edge-1", "s3cr3t-edge"
		f(&c)
		return c
	}
	want := []tunnel.EdgeConfig{
		edge(func(c *tunnel.EdgeConfig) { c.ListenPorts = []int{80, 443} }),
		edge(func(c *tunnel.EdgeConfig) { c.ListenPorts, c.StunInterval = []int{80}, -1 }),
		edge(func(c *tunnel.EdgeConfig) {
			c.HubHost, c.HubPort, c.EdgeID, c.Secret, c.ListenPorts, c.ListenHost = "hub.example", 9000, "e2", "x", []int{8080}, "127.0.0.1"
			c.StunServer, c.StunInterval, c.Connections = "127.0.0.1:3478", 5*time.Second, 3
		}),
		edge(func(c *tunnel.EdgeConfig) {
			c.HubHost, c.Hubs, c.HubMode, c.HubPort = "", []string{"hub-a.example:8443", "hub-b.example"}, "failover", 9443
			c.EdgeID, c.Secret, c.ListenPorts = "e3", "y", []int{80}
			c.Transport, c.QUICFallback = "auto", 1500*time.Millisecond
		}),
	}
	if diff := cmp.Diff(want, eng.edgeStartCalls(), ignoreFuncs...); diff != "" {
		t.Errorf("edge configs (-want +got):\n%s", diff)
	}
	if out := s.out.String() + s.logs.String(); strings.Contains(out, "s3cr3t-edge") {
		t.Fatalf("a secret was written:\n%s", out)
	}
}

func TestEngineErrorsPassThrough(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{
			startHubErr:  errors.New("listen tcp 127.0.0.1:8443: bind: address already in use"),
			startEdgeErr: errors.New("listen tcp 0.0.0.0:80: bind: permission denied"),
		}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		r := s.call("startHub", nil)
		if r.ok || r.message != "listen tcp 127.0.0.1:8443: bind: address already in use" {
			t.Errorf("startHub: %+v", r)
		}
		r2 := s.call("startEdge", edgeParams(80))
		if r2.ok || r2.message != "listen tcp 0.0.0.0:80: bind: permission denied" {
			t.Errorf("startEdge: %+v", r2)
		}
		if d == JSONRPC && (r.code != CodeOperationFailed || r2.code != CodeOperationFailed) {
			t.Errorf("codes %d %d, want %d", r.code, r2.code, CodeOperationFailed)
		}
		// Nothing runs after a failed start.
		if diff := diffFields(t, `{"running":false,"tunnelPort":0,"connectedEdges":[],"eventsDropped":0}`, s.mustCall("getHubStatus", nil)); diff != "" {
			t.Errorf("getHubStatus (-want +got):\n%s", diff)
		}
	})
}

func TestStopWhenNotRunning(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		for _, m := range []string{"stopHub", "stopEdge", "stopHub"} {
			if diff := cmp.Diff(jsonOf(t, `{"stopped":true}`), decode(t, s.mustCall(m, nil))); diff != "" {
				t.Errorf("%s (-want +got):\n%s", m, diff)
			}
		}
	})
}

func TestStopReportsStoppedEvenIfCloseFails(t *testing.T) {
	eng := &fakeEngine{newHub: func() *fakeHub { return &fakeHub{port: 1, closeErr: errFake} }}
	s := startSession(t, Management, eng.engine())
	s.skipReady()
	s.mustCall("startHub", nil)
	if diff := cmp.Diff(jsonOf(t, `{"stopped":true}`), decode(t, s.mustCall("stopHub", nil))); diff != "" {
		t.Errorf("stopHub (-want +got):\n%s", diff)
	}
	if !strings.Contains(s.logs.String(), errFake.Error()) {
		t.Errorf("the close error was not logged")
	}
	s.mustCall("startHub", nil) // the failed close left nothing behind
}

// edgesParam builds updateAllowedEdges params from id, secret pairs.
func edgesParam(pairs ...string) map[string]any {
	edges := []any{}
	for i := 0; i+1 < len(pairs); i += 2 {
		edges = append(edges, map[string]any{"id": pairs[i], "secret": pairs[i+1]})
	}
	return map[string]any{"edges": edges}
}

func TestUpdateAllowedEdges(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		creds := func(pairs ...string) []tunnel.EdgeCredential {
			var c []tunnel.EdgeCredential
			for i := 0; i+1 < len(pairs); i += 2 {
				c = append(c, tunnel.EdgeCredential{ID: pairs[i], Secret: pairs[i+1]})
			}
			return c
		}

		// Before startHub: kept and handed to the hub when it starts.
		res := s.mustCall("updateAllowedEdges", edgesParam("edge-a", "sa", "edge-b", "sb"))
		if diff := cmp.Diff(jsonOf(t, `{"updated":true,"count":2}`), decode(t, res)); diff != "" {
			t.Errorf("result (-want +got):\n%s", diff)
		}
		bad := []struct {
			params map[string]any
			want   string
		}{
			{edgesParam("", "s"), "updateAllowedEdges: edges[0].id must not be empty"},
			{edgesParam("x", "s", "x", "t"), `updateAllowedEdges: edges[1].id "x" duplicates edges[0].id`},
			{edgesParam("x", ""), `updateAllowedEdges: edges[0].secret must not be empty (edge "x")`},
		}
		for _, b := range bad {
			r := s.call("updateAllowedEdges", b.params)
			if r.ok || r.message != b.want {
				t.Errorf("%v: got %+v, want %q", b.params, r, b.want)
			}
			if d == JSONRPC && r.code != jsonrpc2.CodeInvalidParams {
				t.Errorf("%v: code %d", b.params, r.code)
			}
		}

		s.mustCall("startHub", nil)
		if diff := cmp.Diff(creds("edge-a", "sa", "edge-b", "sb"), eng.hubStartCalls()[0].allowed); diff != "" {
			t.Fatalf("allow list at start (-want +got):\n%s", diff)
		}

		// After startHub: passed to the running hub.
		hub := eng.lastHub()
		res = s.mustCall("updateAllowedEdges", edgesParam("edge-c", "sc"))
		if diff := cmp.Diff(jsonOf(t, `{"updated":true,"count":1}`), decode(t, res)); diff != "" {
			t.Errorf("result (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(creds("edge-c", "sc"), hub.allowedEdges()); diff != "" {
			t.Fatalf("running hub's list (-want +got):\n%s", diff)
		}
		// Rejected lists do not reach the running hub.
		s.call("updateAllowedEdges", edgesParam("d", "1", "d", "2"))
		if diff := cmp.Diff(creds("edge-c", "sc"), hub.allowedEdges()); diff != "" {
			t.Fatalf("running hub's list after a rejected update (-want +got):\n%s", diff)
		}
		// A list the hub refuses is not kept either.
		hub.mu.Lock()
		hub.setErr = errFake
		hub.mu.Unlock()
		if r := s.call("updateAllowedEdges", edgesParam("edge-e", "se")); r.ok || r.message != errFake.Error() {
			t.Errorf("hub refusal: %+v", r)
		}
		s.mustCall("stopHub", nil)
		s.mustCall("startHub", nil)
		if diff := cmp.Diff(creds("edge-c", "sc"), eng.hubStartCalls()[1].allowed); diff != "" {
			t.Fatalf("allow list after refusals (-want +got):\n%s", diff)
		}
		// The empty list is a valid list.
		res = s.mustCall("updateAllowedEdges", edgesParam())
		if diff := cmp.Diff(jsonOf(t, `{"updated":true,"count":0}`), decode(t, res)); diff != "" {
			t.Errorf("empty list (-want +got):\n%s", diff)
		}
		for _, secret := range []string{"sa", "sb", "sc", "se"} {
			if strings.Contains(s.logs.String(), "secret="+secret) || strings.Contains(s.out.String(), `"`+secret+`"`) {
				t.Fatalf("secret %q was written", secret)
			}
		}
	})
}

func TestSlowStartDoesNotHoldUpOtherRequests(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{edgeEntered: make(chan struct{}, 2), edgeGate: make(chan struct{})}
		s := startSession(t, d, eng.engine())
		s.skipReady()

		slow := s.request("startEdge", edgeParams(80))
		select {
		case <-eng.edgeEntered:
		case <-time.After(waitLimit):
			t.Fatal("startEdge never reached the engine")
		}
		second := s.request("startEdge", edgeParams(81))
		// While the first start hangs in the engine, ping and status answer.
		s.expectPingNext()
		st := s.replyOf(s.responseTo(s.request("getEdgeStatus", nil)))
		if !st.ok || !strings.Contains(string(st.result), `"running":false`) {
			t.Fatalf("getEdgeStatus during a start: %+v", st)
		}
		if !s.replyOf(s.responseTo(s.request("getHubStatus", nil))).ok {
			t.Fatal("getHubStatus failed")
		}
		if !s.replyOf(s.responseTo(s.request("startHub", nil))).ok {
			t.Fatal("startHub failed while an edge start hangs")
		}

		close(eng.edgeGate)
		if r := s.replyOf(s.responseTo(slow)); !r.ok {
			t.Fatalf("slow startEdge: %+v", r)
		}
		// Starts of one role are serialized: the second one saw the first one's edge.
		if r := s.replyOf(s.responseTo(second)); r.ok || r.message != "edge is already running" {
			t.Fatalf("second startEdge: %+v", r)
		}
		if n := len(eng.edgeStartCalls()); n != 1 {
			t.Fatalf("engine saw %d edge starts, want 1", n)
		}
	})
}

func TestPanicInEngineIsAnError(t *testing.T) {
	eng := &fakeEngine{panicOnEdge: true}
	s := startSession(t, JSONRPC, eng.engine())
	s.skipReady()
	r := s.call("startEdge", edgeParams(80))
	if r.ok || r.code != jsonrpc2.CodeInternalError || r.message != "startEdge: internal error" {
		t.Fatalf("got %+v", r)
	}
	s.expectPingNext()
}

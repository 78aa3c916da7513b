package tunnel

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel/firewall"
)

func TestDefaultConfigsAreValid(t *testing.T) {
	hub := DefaultHubConfig()
	if err := hub.Validate(); err != nil {
		t.Errorf("DefaultHubConfig: %v", err)
	}
	if hub.TunnelPort != DefaultTunnelPort || hub.TargetHost != DefaultTargetHost || hub.DialTimeout != DefaultDialTimeout ||
		hub.MaxPendingHandshakes != DefaultMaxPendingHandshakes || hub.Tuning != DefaultTuning() || hub.Logger != nil {
		t.Errorf("DefaultHubConfig = %+v", hub)
	}
	edge := DefaultEdgeConfig()
	edge.HubHost, edge.EdgeID, edge.Secret, edge.ListenPorts = "hub", "e", "s", []int{80}
	if err := edge.Validate(); err != nil {
		t.Errorf("DefaultEdgeConfig: %v", err)
	}
	if edge.HubPort != DefaultTunnelPort || edge.StunServer != DefaultStunServer || edge.StunInterval != DefaultStunInterval ||
		edge.ReconnectMin != DefaultReconnectMin || edge.ReconnectMax != DefaultReconnectMax ||
		edge.Connections != DefaultConnections || edge.Tuning != DefaultTuning() || edge.Logger != nil {
		t.Errorf("DefaultEdgeConfig = %+v", edge)
	}
	if err := DefaultTuning().Validate(); err != nil {
		t.Errorf("DefaultTuning: %v", err)
	}
}

// Zero fields take their defaults in StartHub and StartEdge, not in Validate.
func TestZeroFieldsTakeDefaults(t *testing.T) {
	if err := (HubConfig{}).withDefaults().Validate(); err != nil {
		t.Errorf("zero HubConfig with defaults: %v", err)
	}
	edge := EdgeConfig{HubHost: "hub", EdgeID: "e", Secret: "s", ListenPorts: []int{80}}
	if err := edge.withDefaults().Validate(); err != nil {
		t.Errorf("minimal EdgeConfig with defaults: %v", err)
	}
	var ce *ConfigError
	if err := edge.Validate(); !errors.As(err, &ce) || ce.Field != "HubPort" {
		t.Errorf("minimal EdgeConfig without defaults: %v, want a HubPort error", err)
	}
	if got := (Tuning{Window: 1, MaxWindow: 1 << 30}).withDefaults(); got.Window != minWindow || got.MaxWindow != maxWindow {
		t.Errorf("windows not clamped: %+v", got)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	edge := func(f func(*EdgeConfig)) error {
		c := DefaultEdgeConfig()
		c.HubHost, c.EdgeID, c.Secret, c.ListenPorts = "hub", "e", "s", []int{80, 443}
		f(&c)
		return c.Validate()
	}
	hub := func(f func(*HubConfig)) error {
		c := DefaultHubConfig()
		f(&c)
		return c.Validate()
	}
	tests := []struct {
		name string
		err  error
		want ConfigError
	}{
		{"empty hub host", edge(func(c *EdgeConfig) { c.HubHost = "" }), ConfigError{Field: "HubHost", Msg: "must not be empty"}},
		{"hub port 0", edge(func(c *EdgeConfig) { c.HubPort = 0 }), ConfigError{Field: "HubPort", Msg: "must be an integer 1-65535"}},
		{"hub port 65536", edge(func(c *EdgeConfig) { c.HubPort = 65536 }), ConfigError{Field: "HubPort", Msg: "must be an integer 1-65535"}},
		{"empty edge id", edge(func(c *EdgeConfig) { c.EdgeID = "" }), ConfigError{Field: "EdgeID", Msg: "must not be empty"}},
		{"long edge id", edge(func(c *EdgeConfig) { c.EdgeID = strings.Repeat("e", 256) }), ConfigError{Field: "EdgeID", Msg: "must be at most 255 bytes"}},
		{"empty secret", edge(func(c *EdgeConfig) { c.Secret = "" }), ConfigError{Field: "Secret", Msg: "must not be empty"}},
		{"duplicate UDP listen port", edge(func(c *EdgeConfig) { c.ListenPortsUDP = []int{53, 53} }), ConfigError{Field: "ListenPortsUDP", Msg: "lists port 53 twice"}},
		{"listen port 0", edge(func(c *EdgeConfig) { c.ListenPorts = []int{80, 443, 0} }), ConfigError{Field: "ListenPorts[2]", Msg: "must be an integer 1-65535"}},
		{"listen port twice", edge(func(c *EdgeConfig) { c.ListenPorts = []int{80, 443, 80} }), ConfigError{Field: "ListenPorts", Msg: "lists port 80 twice"}},
		{"no STUN server", edge(func(c *EdgeConfig) { c.StunServer = "" }), ConfigError{Field: "StunServer", Msg: "must not be empty"}},
		{"reconnect bounds", edge(func(c *EdgeConfig) { c.ReconnectMax = time.Millisecond }), ConfigError{Field: "ReconnectMax", Msg: "must be at least", Ref: "ReconnectMin"}},
		{"connections 0", edge(func(c *EdgeConfig) { c.Connections = 0 }), ConfigError{Field: "Connections", Msg: "must be an integer 1-16"}},
		{"connections 17", edge(func(c *EdgeConfig) { c.Connections = 17 }), ConfigError{Field: "Connections", Msg: "must be an integer 1-16"}},
		{"bad pin", edge(func(c *EdgeConfig) { c.HubCertSHA256 = "abc" }), ConfigError{Field: "HubCertSHA256", Msg: "must be 64 hex digits (a SHA-256)"}},
		{"bad CA", edge(func(c *EdgeConfig) { c.HubCAPEM = "not PEM" }), ConfigError{Field: "HubCAPEM", Msg: "holds no PEM certificate"}},
		{"edge tuning", edge(func(c *EdgeConfig) { c.MaxStreams = 0 }), ConfigError{Field: "MaxStreams", Msg: "must be positive"}},
		{"tunnel port -1", hub(func(c *HubConfig) { c.TunnelPort = -1 }), ConfigError{Field: "TunnelPort", Msg: "must be an integer 0-65535"}},
		{"empty target", hub(func(c *HubConfig) { c.TargetHost = "" }), ConfigError{Field: "TargetHost", Msg: "must not be empty"}},
		{"cert without key", hub(func(c *HubConfig) { c.TLSCertPEM = "CERT" }), ConfigError{Field: "TLSKeyPEM", Msg: "must be given together with", Ref: "TLSCertPEM"}},
		{"key without cert", hub(func(c *HubConfig) { c.TLSKeyPEM = "KEY" }), ConfigError{Field: "TLSCertPEM", Msg: "must be given together with", Ref: "TLSKeyPEM"}},
		{"dial timeout", hub(func(c *HubConfig) { c.DialTimeout = 0 }), ConfigError{Field: "DialTimeout", Msg: "must be positive"}},
		{"pending handshakes", hub(func(c *HubConfig) { c.MaxPendingHandshakes = 0 }), ConfigError{Field: "MaxPendingHandshakes", Msg: "must be positive"}},
		{"hub tuning", hub(func(c *HubConfig) { c.Window = 1 }), ConfigError{Field: "Window", Msg: "must be 65536-16777216 bytes"}},
		{"empty edge id in list", ValidateEdgeList([]EdgeCredential{{ID: "a", Secret: "1"}, {ID: "", Secret: "2"}}), ConfigError{Field: "Edges[1].ID", Msg: "must not be empty"}},
		{"long edge id in list", ValidateEdgeList([]EdgeCredential{{ID: strings.Repeat("i", 300), Secret: "1"}}), ConfigError{Field: "Edges[0].ID", Msg: "must be at most 255 bytes"}},
		{"empty secret in list", ValidateEdgeList([]EdgeCredential{{ID: "a", Secret: "1"}, {ID: "b", Secret: ""}}), ConfigError{Field: "Edges[1].Secret", Msg: `must not be empty (edge "b")`}},
		{"port out of range in an assignment", ValidateEdgeList([]EdgeCredential{{ID: "a", Secret: "1", Ports: &PortAssignment{TCP: []int{80, 70000}}}}), ConfigError{Field: "Edges[0].ListenPorts[1]", Msg: `must be an integer 1-65535 (edge "a")`}},
		{"duplicate UDP port in an assignment", ValidateEdgeList([]EdgeCredential{{ID: "a", Secret: "1", Ports: &PortAssignment{UDP: []int{53, 53}}}}), ConfigError{Field: "Edges[0].ListenPortsUDP", Msg: `lists port 53 twice (edge "a")`}},
		{"bad CIDR in a firewall", ValidateEdgeList([]EdgeCredential{{ID: "a", Secret: "1", Firewall: &firewall.Rules{BlockedIPs: []string{"10.0.0.0/8", "10.0.0.0/33"}}}}), ConfigError{Field: "Edges[0].Firewall.blockedIps[1]", Msg: `is not an IP address or CIDR: "10.0.0.0/33" (edge "a")`}},
		{"negative firewall limit", ValidateEdgeList([]EdgeCredential{{ID: "a", Secret: "1", Firewall: &firewall.Rules{MaxConnectionsPerIP: -1}}}), ConfigError{Field: "Edges[0].Firewall.maxConnectionsPerIp", Msg: `must not be negative (edge "a")`}},
		{"duplicate id in list", ValidateEdgeList([]EdgeCredential{{ID: "a", Secret: "1"}, {ID: "b", Secret: "2"}, {ID: "a", Secret: "3"}}), ConfigError{Field: "Edges[2].ID", Msg: `"a" duplicates`, Ref: "Edges[0].ID"}},
	}
	for _, tc := range tests {
		var ce *ConfigError
		if !errors.As(tc.err, &ce) {
			t.Errorf("%s: %v is not a *ConfigError", tc.name, tc.err)
			continue
		}
		if diff := cmp.Diff(tc.want, *ce); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	if got := (&ConfigError{Field: "Edges[2].ID", Msg: `"a" duplicates`, Ref: "Edges[0].ID"}).Error(); got != `Edges[2].ID "a" duplicates Edges[0].ID` {
		t.Errorf("Error() = %q", got)
	}
}

// StartHub and StartEdge return the ConfigError before binding anything.
func TestStartRefusesInvalidConfig(t *testing.T) {
	var ce *ConfigError
	if _, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TunnelPort: 70000}, nil); !errors.As(err, &ce) || ce.Field != "TunnelPort" {
		t.Errorf("StartHub with port 70000: %v", err)
	}
	if _, err := StartHub(HubConfig{ListenHost: "127.0.0.1"}, []EdgeCredential{{ID: "a", Secret: ""}}); !errors.As(err, &ce) || ce.Field != "Edges[0].Secret" {
		t.Errorf("StartHub with an empty secret: %v", err)
	}
	port := testutil.FreePort(t, "127.0.0.1", "127.0.0.2")
	_, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", EdgeID: "e", Secret: "s", ListenHost: "127.0.0.1",
		ListenPorts: []int{port, 0}, StunInterval: -1})
	if !errors.As(err, &ce) || ce.Field != "ListenPorts[1]" {
		t.Fatalf("StartEdge with port 0: %v", err)
	}
	// The valid port was not bound.
	e, err := StartEdge(EdgeConfig{HubHost: "127.0.0.1", HubPort: 1, EdgeID: "e", Secret: "s", ListenHost: "127.0.0.1",
		ListenPorts: []int{port}, StunInterval: -1})
	if err != nil {
		t.Fatalf("port %d held after a refused start: %v", port, err)
	}
	e.Close()
}

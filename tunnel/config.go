package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/serve-zone/remoteingress/tunnel/firewall"
)

// Configuration of hubs and edges: every default, the config types, and the
// checks StartHub and StartEdge apply, in the style of yamux's
// DefaultConfig/VerifyConfig.
//
// A zero field takes its default: StartHub and StartEdge fill zero fields
// (withDefaults) and then Validate. Validate itself checks a config as it
// stands, so a caller that starts from DefaultHubConfig or DefaultEdgeConfig
// and sets what it was given learns about an explicit zero (a hub port of 0)
// instead of having it silently replaced by the default.
//
// Internal protocol limits that no caller configures (minWindow, maxWindow,
// maxDataFrame, writeBufSize, maxEdgeIDLen...) stay beside the code that uses
// them.

// Defaults of HubConfig.
const (
	// DefaultTunnelPort is the hub's tunnel port, and the hub port an edge dials.
	DefaultTunnelPort = 8443
	// DefaultTargetHost is where the hub forwards streams.
	DefaultTargetHost = "127.0.0.1"
	// DefaultDialTimeout bounds the hub's dial to the target.
	DefaultDialTimeout = 10 * time.Second
	// DefaultMaxPendingHandshakes caps the connections that have not authenticated yet.
	DefaultMaxPendingHandshakes = 256
	// DefaultUDPProxyProtocol is how the hub tells UDP targets the client's address.
	DefaultUDPProxyProtocol = UDPProxyFirst
)

// Defaults of UDP, on both sides.
const (
	// DefaultUDPIdleTimeout ends a flow idle in both directions this long.
	DefaultUDPIdleTimeout = 60 * time.Second
	// DefaultMaxUDPFlows caps the flows of one edge (the hub: per edge).
	DefaultMaxUDPFlows = 1 << 16
)

// Defaults of EdgeConfig.
const (
	DefaultStunServer   = "stun.cloudflare.com:3478"
	DefaultStunInterval = 300 * time.Second
	DefaultReconnectMin = time.Second
	DefaultReconnectMax = 30 * time.Second
	// DefaultConnections is the number of TLS connections of one tunnel.
	DefaultConnections = 2
)

// Defaults of Tuning.
const (
	DefaultWindow            = 256 << 10
	DefaultMaxWindow         = 4 << 20
	DefaultWindowBudget      = 32 << 20
	DefaultKeepaliveInterval = 10 * time.Second
	DefaultKeepaliveTimeout  = 30 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultMaxStreams        = 1 << 16
	// DefaultIdleAfter: a stream whose socket has been silent this long (one
	// to two times it, as the sweep runs at this interval) hibernates: its
	// upstream goroutine ends and the session's idle poller watches the
	// socket instead (hibernate_linux.go).
	DefaultIdleAfter = time.Second
)

// ConfigError is a configuration value the engine refuses. Field names it the
// way Go code does (HubHost, ListenPorts[2], Edges[1].Secret); a caller with
// names of its own for these values (the bridge's JSON params) renders Field
// and Ref in its vocabulary, in the order Error uses.
type ConfigError struct {
	// Field is the value that is wrong.
	Field string
	// Msg says what is wrong; it follows the field's name ("must not be empty").
	Msg string
	// Ref is another field Msg refers to, named after it, or "":
	// {Field: "Edges[1].ID", Msg: `"a" duplicates`, Ref: "Edges[0].ID"}.
	Ref string
}

// Error implements error: "Field Msg" or "Field Msg Ref".
func (e *ConfigError) Error() string {
	if e.Ref == "" {
		return e.Field + " " + e.Msg
	}
	return e.Field + " " + e.Msg + " " + e.Ref
}

func configErr(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// checkPort checks that p is a port in [lo, 65535].
func checkPort(field string, p, lo int) error {
	if p < lo || p > 65535 {
		return configErr(field, "must be an integer %d-65535", lo)
	}
	return nil
}

// checkListenAddr checks an optional listen address: "" or host:port (the
// host may be empty for all interfaces, the port 0-65535).
func checkListenAddr(field, addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return configErr(field, "must be host:port (%q is not)", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return configErr(field, "must have a port 0-65535 (%q has not)", addr)
	}
	return nil
}

// indexed names element i of the list field.
func indexed(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// Tuning holds the knobs shared by hub and edge. Zero values take defaults;
// out-of-range windows are clamped to what the protocol allows.
type Tuning struct {
	// Window is the receive window a stream starts with, in bytes
	// (default 256 KiB): what a stream whose reader stops can hold here.
	Window uint32
	// MaxWindow is what a stream's receive window may grow to while its
	// reader keeps up with the sender (default 4 MiB; at least Window).
	MaxWindow uint32
	// WindowBudget caps the growth beyond Window of all the streams of one
	// tunnel together (default 32 MiB), so that what one tunnel can make
	// this side hold is at most streams × Window + WindowBudget.
	WindowBudget uint32
	// KeepaliveInterval is how often a PING is sent (default 10 s).
	KeepaliveInterval time.Duration
	// KeepaliveTimeout closes a tunnel from which nothing arrived for this long (default 30 s).
	KeepaliveTimeout time.Duration
	// HandshakeTimeout bounds TLS plus authentication (default 10 s).
	HandshakeTimeout time.Duration
	// MaxStreams caps the concurrent streams of one tunnel (default 65536).
	// The edge refuses clients beyond it; an edge that opens more is in
	// violation of the protocol.
	MaxStreams int

	// idleAfter is how long a stream waits silent in a read before it
	// hibernates (default DefaultIdleAfter; tests shorten it).
	idleAfter time.Duration
	// hubRefresh is how often an edge resolves its hub names again
	// (default DefaultHubRefresh; tests shorten it).
	hubRefresh time.Duration
}

// DefaultHubRefresh is how often an edge resolves the names of its hubs
// again, to follow a name whose addresses change (hub replicas replaced).
const DefaultHubRefresh = 30 * time.Second

// DefaultTuning returns a Tuning with every field at its default.
func DefaultTuning() Tuning { return Tuning{}.withDefaults() }

// withDefaults fills zero fields and clamps the windows.
func (t Tuning) withDefaults() Tuning {
	if t.Window == 0 {
		t.Window = DefaultWindow
	}
	t.Window = min(max(t.Window, minWindow), maxWindow)
	if t.MaxWindow == 0 {
		t.MaxWindow = DefaultMaxWindow
	}
	t.MaxWindow = min(max(t.MaxWindow, t.Window), maxWindow)
	if t.WindowBudget == 0 {
		t.WindowBudget = DefaultWindowBudget
	}
	if t.KeepaliveInterval <= 0 {
		t.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if t.KeepaliveTimeout <= 0 {
		t.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if t.HandshakeTimeout <= 0 {
		t.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if t.MaxStreams <= 0 {
		t.MaxStreams = DefaultMaxStreams
	}
	if t.idleAfter <= 0 {
		t.idleAfter = DefaultIdleAfter
	}
	if t.hubRefresh <= 0 {
		t.hubRefresh = DefaultHubRefresh
	}
	return t
}

// Validate checks t as it stands (zero fields are errors here).
func (t Tuning) Validate() error {
	switch {
	case t.Window < minWindow || t.Window > maxWindow:
		return configErr("Window", "must be %d-%d bytes", minWindow, maxWindow)
	case t.MaxWindow < t.Window || t.MaxWindow > maxWindow:
		return configErr("MaxWindow", "must be Window-%d bytes", maxWindow)
	case t.WindowBudget == 0:
		return configErr("WindowBudget", "must be positive")
	case t.KeepaliveInterval <= 0:
		return configErr("KeepaliveInterval", "must be positive")
	case t.KeepaliveTimeout <= 0:
		return configErr("KeepaliveTimeout", "must be positive")
	case t.HandshakeTimeout <= 0:
		return configErr("HandshakeTimeout", "must be positive")
	case t.MaxStreams <= 0:
		return configErr("MaxStreams", "must be positive")
	}
	return nil
}

// discardLogger is the logger of a config without one.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// HubConfig configures a Hub.
type HubConfig struct {
	// ListenHost is the address the tunnel port binds to (default: all interfaces).
	ListenHost string
	// TunnelPort is the TCP port edges connect to; 0 picks a free port
	// (DefaultHubConfig sets DefaultTunnelPort).
	TunnelPort int
	// TargetHost is where streams are forwarded, on the edge's listen port (default 127.0.0.1).
	TargetHost string
	// TLSCertPEM and TLSKeyPEM are an optional certificate; empty generates a self-signed ECDSA P-256 one.
	TLSCertPEM, TLSKeyPEM string
	// DialTimeout bounds the dial to the target (default 10 s).
	DialTimeout time.Duration
	// MaxPendingHandshakes caps connections that have not authenticated yet
	// (default 256); beyond it the oldest is dropped to make room.
	MaxPendingHandshakes int
	// MetricsListen is host:port of the metrics and health listener (port 0:
	// any free one), or "" for none. The engine does not serve it: whoever
	// runs the hub does (internal/monitor); it is checked here with the rest.
	MetricsListen string
	// ProxyProtocol is the PROXY protocol version the hub writes to its TCP
	// targets: ProxyProtocolV1 (the default) or ProxyProtocolV2.
	ProxyProtocol string
	// UDPProxyProtocol is how the hub gives UDP targets the client's
	// address: UDPProxyFirst (the default), UDPProxyEvery or UDPProxyNone.
	UDPProxyProtocol string
	// UDPIdleTimeout ends a flow idle in both directions this long (default 60 s).
	UDPIdleTimeout time.Duration
	// MaxUDPFlows caps the flows of one edge; beyond it the least recently
	// used goes (default 65536).
	MaxUDPFlows int
	// DisableQUIC turns off the QUIC listener on UDP TunnelPort (param
	// quic: false); edges then connect over TLS alone.
	DisableQUIC bool
	Tuning
	Logger *slog.Logger
	Events EventSink
}

// DefaultHubConfig returns a HubConfig with every default set, TunnelPort
// included; it has no logger or event sink.
func DefaultHubConfig() HubConfig {
	c := HubConfig{TunnelPort: DefaultTunnelPort}.withDefaults()
	c.Logger = nil
	return c
}

// withDefaults fills the zero fields but TunnelPort (where 0 picks a free port).
func (c HubConfig) withDefaults() HubConfig {
	if c.TargetHost == "" {
		c.TargetHost = DefaultTargetHost
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxPendingHandshakes <= 0 {
		c.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	if c.ProxyProtocol == "" {
		c.ProxyProtocol = ProxyProtocolV1
	}
	if c.UDPProxyProtocol == "" {
		c.UDPProxyProtocol = DefaultUDPProxyProtocol
	}
	if c.UDPIdleTimeout == 0 {
		c.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if c.MaxUDPFlows == 0 {
		c.MaxUDPFlows = DefaultMaxUDPFlows
	}
	c.Tuning = c.Tuning.withDefaults()
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
	return c
}

// Validate checks c as it stands; the error is a *ConfigError. It does not
// parse the certificate (StartHub does, and says when it is invalid).
func (c HubConfig) Validate() error {
	if err := checkPort("TunnelPort", c.TunnelPort, 0); err != nil {
		return err
	}
	if c.TargetHost == "" {
		return configErr("TargetHost", "must not be empty")
	}
	if err := certPairError(c.TLSCertPEM, c.TLSKeyPEM); err != nil {
		return err
	}
	if c.DialTimeout <= 0 {
		return configErr("DialTimeout", "must be positive")
	}
	if c.MaxPendingHandshakes <= 0 {
		return configErr("MaxPendingHandshakes", "must be positive")
	}
	if err := checkListenAddr("MetricsListen", c.MetricsListen); err != nil {
		return err
	}
	if err := checkProxyProtocol(c.ProxyProtocol); err != nil {
		return err
	}
	switch c.UDPProxyProtocol {
	case UDPProxyFirst, UDPProxyEvery, UDPProxyNone:
	default:
		return configErr("UDPProxyProtocol", "must be %q, %q or %q", UDPProxyFirst, UDPProxyEvery, UDPProxyNone)
	}
	if err := checkUDPLimits(c.UDPIdleTimeout, c.MaxUDPFlows); err != nil {
		return err
	}
	return c.Tuning.Validate()
}

// checkUDPLimits checks UDPIdleTimeout and MaxUDPFlows of either side.
func checkUDPLimits(idle time.Duration, maxFlows int) error {
	if idle <= 0 {
		return configErr("UDPIdleTimeout", "must be positive")
	}
	if maxFlows <= 0 {
		return configErr("MaxUDPFlows", "must be positive")
	}
	return nil
}

// certPairError says which of a certificate and its key is missing.
func certPairError(certPEM, keyPEM string) error {
	switch {
	case certPEM != "" && keyPEM == "":
		return &ConfigError{Field: "TLSKeyPEM", Msg: "must be given together with", Ref: "TLSCertPEM"}
	case certPEM == "" && keyPEM != "":
		return &ConfigError{Field: "TLSCertPEM", Msg: "must be given together with", Ref: "TLSKeyPEM"}
	}
	return nil
}

// EdgeCredential is one entry of the hub's allow list: an edge's identity
// and, optionally, what the hub decides for it (CONTRACT section 7).
type EdgeCredential struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
	// Ports, when not nil, are the ports the hub assigns to the edge: it
	// listens on exactly these, whatever its own config says. Nil leaves the
	// edge's ports to the edge.
	Ports *PortAssignment `json:"-"`
	// Firewall, when not nil, is enforced by the edge on every new client
	// connection and UDP flow.
	Firewall *firewall.Rules `json:"-"`
}

// PortAssignment is the ports the hub assigns to an edge.
type PortAssignment struct {
	TCP []int // listenPorts
	UDP []int // listenPortsUdp
}

// managed reports whether the hub decides anything for the edge beside
// letting it in: an older edge that cannot take an assignment is refused.
func (c EdgeCredential) managed() bool { return c.Ports != nil || c.Firewall != nil }

// String never shows the secret.
func (c EdgeCredential) String() string { return "EdgeCredential{" + c.ID + "}" }

// ValidateEdgeList checks an allow list: ids 1-255 bytes and unique, secrets
// non-empty. The error is a *ConfigError on Edges[i].ID or Edges[i].Secret;
// it names an edge by index and id, never by secret.
func ValidateEdgeList(edges []EdgeCredential) error {
	seen := make(map[string]int, len(edges))
	for i, e := range edges {
		field := indexed("Edges", i)
		switch {
		case e.ID == "":
			return configErr(field+".ID", "must not be empty")
		case len(e.ID) > maxEdgeIDLen:
			return configErr(field+".ID", "must be at most %d bytes", maxEdgeIDLen)
		case e.Secret == "":
			return configErr(field+".Secret", "must not be empty (edge %q)", e.ID)
		}
		if first, dup := seen[e.ID]; dup {
			return &ConfigError{Field: field + ".ID", Msg: fmt.Sprintf("%q duplicates", e.ID), Ref: indexed("Edges", first) + ".ID"}
		}
		seen[e.ID] = i
		if e.Ports != nil {
			if err := checkPortList(field+".ListenPorts", e.Ports.TCP); err != nil {
				return ofEdge(err, e.ID)
			}
			if err := checkPortList(field+".ListenPortsUDP", e.Ports.UDP); err != nil {
				return ofEdge(err, e.ID)
			}
		}
		if e.Firewall != nil {
			if err := e.Firewall.Validate(); err != nil {
				var fe *firewall.FieldError
				if errors.As(err, &fe) {
					return configErr(field+".Firewall."+fe.Field, "%s (edge %q)", fe.Msg, e.ID)
				}
				return configErr(field+".Firewall", "%v (edge %q)", err, e.ID)
			}
		}
		if n := len(encodeAssign(assignFor(e), 0)); n > maxAssignLen {
			return configErr(field, "assigns too much to send to the edge: %d bytes encoded, at most %d (edge %q)", n, maxAssignLen, e.ID)
		}
	}
	return nil
}

// ofEdge adds the edge's id to a *ConfigError's message.
func ofEdge(err error, id string) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &ConfigError{Field: ce.Field, Msg: fmt.Sprintf("%s (edge %q)", ce.Msg, id), Ref: ce.Ref}
	}
	return err
}

// checkPortList checks a list of listen ports: each 1-65535, none twice.
func checkPortList(field string, ports []int) error {
	seen := make(map[int]bool, len(ports))
	for i, p := range ports {
		if err := checkPort(indexed(field, i), p, 1); err != nil {
			return err
		}
		if seen[p] {
			return configErr(field, "lists port %d twice", p)
		}
		seen[p] = true
	}
	return nil
}

// EdgeConfig configures an Edge.
type EdgeConfig struct {
	HubHost string
	// HubPort is the hub's tunnel port (default DefaultTunnelPort), and the
	// port of a Hubs entry that has none.
	HubPort int
	// Hubs, instead of HubHost, are several hubs ("host:port" or "host"):
	// a name that resolves to several addresses counts as that many hubs.
	Hubs []string
	// HubMode is HubSpread (default: a tunnel to every hub, new clients to
	// the live one with the fewest streams) or HubFailover (one hub at a
	// time, in list order).
	HubMode string
	EdgeID  string
	Secret  string
	// ListenPorts are the public TCP ports and ListenPortsUDP the UDP ports,
	// until the hub assigns others (both may be empty: the edge then waits
	// for the hub's assignment); ListenHost is the address they bind to
	// (default all interfaces).
	ListenPorts    []int
	ListenPortsUDP []int
	ListenHost     string
	// StunServer is host:port of a STUN server (default stun.cloudflare.com:3478);
	// StunInterval how often to ask it (default 300 s; negative turns STUN off).
	StunServer   string
	StunInterval time.Duration
	// HubCertSHA256 pins the hub's certificate: the hex SHA-256 of its DER
	// encoding (colons and case ignored), as shown in the hub's certSha256.
	HubCertSHA256 string
	// HubCAPEM, when set, verifies the hub's certificate chain against these
	// CA certificates and HubServerName (default HubHost), like any TLS client.
	HubCAPEM      string
	HubServerName string
	// ReconnectMin and ReconnectMax bound the reconnect backoff (defaults 1 s and 30 s).
	ReconnectMin, ReconnectMax time.Duration
	// Connections is how many TLS connections the tunnel spreads its streams
	// over (default 1, 1..MaxTunnelConnections). More than one lets
	// encryption and decryption of many streams run on that many cores on
	// both sides; one stream always uses one connection.
	Connections int
	// MetricsListen is as in HubConfig.
	MetricsListen string
	// LookupHost resolves hub names to addresses; nil: the system
	// resolver. A name with several addresses counts as that many hubs.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// FirewallBackend is FirewallAuto (default: nftables for blocked
	// addresses where the edge may use it, and the in-process check) or
	// FirewallProcess (the in-process check alone).
	FirewallBackend string
	// UDPIdleTimeout ends a flow idle in both directions this long (default 60 s).
	UDPIdleTimeout time.Duration
	// MaxUDPFlows caps the edge's flows; beyond it the least recently used
	// goes (default 65536).
	MaxUDPFlows int
	// Transport is how the edge reaches its hubs: TransportTLS (the
	// default: TLS over TCP), TransportQUIC, or TransportAuto (QUIC, and
	// TLS when no QUIC handshake completes within QUICFallback).
	Transport string
	// QUICFallback is how long TransportAuto waits for a QUIC handshake
	// before it uses TLS (default 3 s).
	QUICFallback time.Duration
	Tuning
	Logger *slog.Logger
	Events EventSink
}

// String never shows the secret.
func (c EdgeConfig) String() string {
	return "EdgeConfig{edgeId=" + c.EdgeID + " hub=" + c.HubHost + "}"
}

// DefaultEdgeConfig returns an EdgeConfig with every default set; the hub,
// the identity and the listen ports are left for the caller.
func DefaultEdgeConfig() EdgeConfig {
	c := EdgeConfig{}.withDefaults()
	c.Logger = nil
	return c
}

// withDefaults fills the zero fields.
func (c EdgeConfig) withDefaults() EdgeConfig {
	if c.HubPort == 0 {
		c.HubPort = DefaultTunnelPort
	}
	if c.StunServer == "" {
		c.StunServer = DefaultStunServer
	}
	if c.StunInterval == 0 {
		c.StunInterval = DefaultStunInterval
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	c.ReconnectMax = max(c.ReconnectMax, c.ReconnectMin)
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.FirewallBackend == "" {
		c.FirewallBackend = FirewallAuto
	}
	if c.HubMode == "" {
		c.HubMode = HubSpread
	}
	if c.Transport == "" {
		c.Transport = DefaultTransport
	}
	if c.QUICFallback == 0 {
		c.QUICFallback = DefaultQUICFallback
	}
	if c.UDPIdleTimeout == 0 {
		c.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if c.MaxUDPFlows == 0 {
		c.MaxUDPFlows = DefaultMaxUDPFlows
	}
	c.Tuning = c.Tuning.withDefaults()
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
	return c
}

// Validate checks c as it stands, the hub verification options included;
// the error is a *ConfigError.
func (c EdgeConfig) Validate() error {
	switch {
	case len(c.Hubs) > 0 && c.HubHost != "":
		return &ConfigError{Field: "Hubs", Msg: "cannot be given with", Ref: "HubHost"}
	case len(c.Hubs) == 0 && c.HubHost == "":
		return configErr("HubHost", "must not be empty")
	}
	if err := checkPort("HubPort", c.HubPort, 1); err != nil {
		return err
	}
	seenHub := make(map[string]bool, len(c.Hubs))
	for i, h := range c.Hubs {
		host, port, err := net.SplitHostPort(withPort(h, c.HubPort))
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil || host == "":
			return configErr(indexed("Hubs", i), "must be host:port or host, not %q", h)
		case perr != nil || n < 1 || n > 65535:
			return configErr(indexed("Hubs", i), "has port %q: must be an integer 1-65535", port)
		case seenHub[withPort(h, c.HubPort)]:
			return configErr("Hubs", "lists %s twice", h)
		}
		seenHub[withPort(h, c.HubPort)] = true
	}
	if c.HubMode != HubSpread && c.HubMode != HubFailover {
		return configErr("HubMode", "must be %q or %q", HubSpread, HubFailover)
	}
	switch c.Transport {
	case TransportTLS, TransportQUIC, TransportAuto:
	default:
		return configErr("Transport", "must be %q, %q or %q", TransportTLS, TransportQUIC, TransportAuto)
	}
	if c.QUICFallback <= 0 {
		return configErr("QUICFallback", "must be positive")
	}
	switch {
	case c.EdgeID == "":
		return configErr("EdgeID", "must not be empty")
	case len(c.EdgeID) > maxEdgeIDLen:
		return configErr("EdgeID", "must be at most %d bytes", maxEdgeIDLen)
	case c.Secret == "":
		return configErr("Secret", "must not be empty")
	}
	if err := checkPortList("ListenPorts", c.ListenPorts); err != nil {
		return err
	}
	if err := checkPortList("ListenPortsUDP", c.ListenPortsUDP); err != nil {
		return err
	}
	if c.StunInterval > 0 && c.StunServer == "" {
		return configErr("StunServer", "must not be empty")
	}
	if c.ReconnectMin <= 0 {
		return configErr("ReconnectMin", "must be positive")
	}
	if c.ReconnectMax < c.ReconnectMin {
		return &ConfigError{Field: "ReconnectMax", Msg: "must be at least", Ref: "ReconnectMin"}
	}
	if c.Connections < 1 || c.Connections > MaxTunnelConnections {
		return configErr("Connections", "must be an integer 1-%d", MaxTunnelConnections)
	}
	if c.FirewallBackend != FirewallAuto && c.FirewallBackend != FirewallProcess {
		return configErr("FirewallBackend", "must be %q or %q", FirewallAuto, FirewallProcess)
	}
	if err := checkUDPLimits(c.UDPIdleTimeout, c.MaxUDPFlows); err != nil {
		return err
	}
	if _, err := edgeTLSConfigFor(c.serverName(), c.HubCertSHA256, c.HubCAPEM); err != nil {
		return err
	}
	if err := checkListenAddr("MetricsListen", c.MetricsListen); err != nil {
		return err
	}
	return c.Tuning.Validate()
}

// lookupHost is the resolver of hub names.
func (c EdgeConfig) lookupHost() func(context.Context, string) ([]string, error) {
	if c.LookupHost != nil {
		return c.LookupHost
	}
	return net.DefaultResolver.LookupHost
}

// serverName is the name the hub's certificate is verified against.
func (c EdgeConfig) serverName() string {
	if c.HubServerName != "" {
		return c.HubServerName
	}
	return c.HubHost
}

// Package tunnel is the remoteingress engine: the frame codec, the multiplexed
// session over one TLS connection, the authentication handshake, the hub
// (private side) and the edge (public side).
package tunnel

import (
	"log/slog"
	"time"
)

// Event is something that happened in the engine, reported to whoever drives
// it (the bridge turns it into an `{"event":...}` line). Data is a value that
// encodes to the event's JSON object.
type Event struct {
	Name string
	Data any
}

// EventSink receives engine events. It is called from data-path goroutines and
// must never block: a sink that cannot deliver drops and counts.
type EventSink func(Event)

// Event names (see CONTRACT section 4).
const (
	EventEdgeConnected      = "edgeConnected"
	EventEdgeDisconnected   = "edgeDisconnected"
	EventStreamOpened       = "streamOpened"
	EventStreamClosed       = "streamClosed"
	EventTunnelConnected    = "tunnelConnected"
	EventTunnelDisconnected = "tunnelDisconnected"
	EventPublicIPDiscovered = "publicIpDiscovered"
)

// EdgeEvent is the data of edgeConnected.
type EdgeEvent struct {
	EdgeID string `json:"edgeId"`
	// RemoteAddr is the address the edge's tunnel connection came from.
	RemoteAddr string `json:"remoteAddr,omitempty"`
}

// EdgeDisconnectedEvent is the data of edgeDisconnected.
type EdgeDisconnectedEvent struct {
	EdgeID string `json:"edgeId"`
	Reason string `json:"reason"`
}

// StreamEvent is the data of streamOpened and streamClosed.
type StreamEvent struct {
	EdgeID   string `json:"edgeId"`
	StreamID uint32 `json:"streamId"`
}

// TunnelConnectedEvent is the data of tunnelConnected.
type TunnelConnectedEvent struct {
	HubAddr string `json:"hubAddr"`
}

// TunnelDisconnectedEvent is the data of tunnelDisconnected.
type TunnelDisconnectedEvent struct {
	Reason string `json:"reason"`
}

// PublicIPEvent is the data of publicIpDiscovered.
type PublicIPEvent struct {
	IP string `json:"ip"`
}

// EdgeCredential is one entry of the hub's allow list.
type EdgeCredential struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

// String never shows the secret.
func (c EdgeCredential) String() string { return "EdgeCredential{" + c.ID + "}" }

// Tuning holds the knobs shared by hub and edge. Zero values take defaults.
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
}

// HubConfig configures a Hub.
type HubConfig struct {
	// ListenHost is the address the tunnel port binds to (default: all interfaces).
	ListenHost string
	// TunnelPort is the TCP port edges connect to; 0 picks a free port.
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
	Tuning
	Logger *slog.Logger
	Events EventSink
}

// HubStatus is the result of getHubStatus.
type HubStatus struct {
	Running        bool            `json:"running"`
	TunnelPort     int             `json:"tunnelPort"`
	ConnectedEdges []ConnectedEdge `json:"connectedEdges"`
	// CertSha256 is the SHA-256 fingerprint of the hub's certificate (hex), for pinning.
	CertSha256 string `json:"certSha256,omitempty"`
	// PendingHandshakes counts connections not authenticated yet.
	PendingHandshakes int `json:"pendingHandshakes"`
	// RejectedHandshakes counts connections refused before or during authentication.
	RejectedHandshakes uint64 `json:"rejectedHandshakes"`
	// AuthFailures counts proofs checked and found wrong (or for an unknown edge id).
	AuthFailures uint64 `json:"authFailures"`
}

// ConnectedEdge describes one authenticated tunnel in HubStatus.
type ConnectedEdge struct {
	EdgeID        string `json:"edgeId"`
	ConnectedAt   int64  `json:"connectedAt"`
	ActiveStreams int    `json:"activeStreams"`
	RemoteAddr    string `json:"remoteAddr"`
	// Connections is how many tunnel connections the edge has up.
	Connections int `json:"connections"`
}

// EdgeConfig configures an Edge.
type EdgeConfig struct {
	HubHost string
	HubPort int
	EdgeID  string
	Secret  string
	// ListenPorts are the public ports; ListenHost the address they bind to (default all interfaces).
	ListenPorts []int
	ListenHost  string
	// StunServer is host:port of a STUN server (default stun.cloudflare.com:3478);
	// StunInterval how often to ask it (default 300 s).
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
	Tuning
	Logger *slog.Logger
	Events EventSink
}

// String never shows the secret.
func (c EdgeConfig) String() string {
	return "EdgeConfig{edgeId=" + c.EdgeID + " hub=" + c.HubHost + "}"
}

// EdgeStatus is the result of getEdgeStatus.
type EdgeStatus struct {
	Running       bool    `json:"running"`
	Connected     bool    `json:"connected"`
	PublicIP      *string `json:"publicIp"`
	ActiveStreams int     `json:"activeStreams"`
	ListenPorts   []int   `json:"listenPorts"`
	// LastError says why the tunnel is down ("" while connected or never tried).
	LastError string `json:"lastError,omitempty"`
	// ReconnectAttempts counts failed connection attempts since the last success.
	ReconnectAttempts int `json:"reconnectAttempts"`
	// Connections is how many tunnel connections are up (0 while disconnected).
	Connections int `json:"connections"`
}

// Package tunnel is the remoteingress engine: the frame codec, the multiplexed
// session over one TLS connection, the authentication handshake, the hub
// (private side) and the edge (public side).
package tunnel

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

// Event names (README, "Events").
const (
	EventEdgeConnected      = "edgeConnected"
	EventEdgeDisconnected   = "edgeDisconnected"
	EventStreamOpened       = "streamOpened"
	EventStreamClosed       = "streamClosed"
	EventTunnelConnected    = "tunnelConnected"
	EventTunnelDisconnected = "tunnelDisconnected"
	EventPublicIPDiscovered = "publicIpDiscovered"
	EventPortsAssigned      = "portsAssigned"
	EventPortError          = "portError"
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
	// Hub is the hub's address (the same as HubAddr; the contract's name).
	Hub       string `json:"hub"`
	Transport string `json:"transport"`
}

// TunnelDisconnectedEvent is the data of tunnelDisconnected.
type TunnelDisconnectedEvent struct {
	Reason string `json:"reason"`
	// Hub is the address of the hub the tunnel was to (or failed to reach).
	Hub string `json:"hub,omitempty"`
}

// PublicIPEvent is the data of publicIpDiscovered.
type PublicIPEvent struct {
	IP string `json:"ip"`
}

// PortsAssignedEvent is the data of portsAssigned, which follows every
// assignment the edge receives: the ports it was told to listen on (its own
// when the hub assigns none). Those it could not bind had a portError.
type PortsAssignedEvent struct {
	ListenPorts    []int `json:"listenPorts"`
	ListenPortsUDP []int `json:"listenPortsUdp"`
}

// PortErrorEvent is the data of portError: a port the edge cannot bind.
type PortErrorEvent struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"` // "tcp" or "udp"
	Error    string `json:"error"`
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
	// ProxyProtocol is the PROXY protocol version written to TCP targets ("v1" or "v2").
	ProxyProtocol string `json:"proxyProtocol,omitempty"`
	// QUICPort is the UDP port of the QUIC listener, 0 when off.
	QUICPort int `json:"quicPort"`
}

// ConnectedEdge describes one authenticated tunnel in HubStatus.
type ConnectedEdge struct {
	EdgeID        string `json:"edgeId"`
	ConnectedAt   int64  `json:"connectedAt"`
	ActiveStreams int    `json:"activeStreams"`
	RemoteAddr    string `json:"remoteAddr"`
	// Connections is how many tunnel connections the edge has up.
	Connections int `json:"connections"`
	// ListenPorts and ListenPortsUDP are the ports the edge reports bound
	// (empty for an edge that does not report them).
	ListenPorts    []int `json:"listenPorts"`
	ListenPortsUDP []int `json:"listenPortsUdp"`
	// ActiveUDPFlows is the edge's UDP flows open at the hub now.
	ActiveUDPFlows int `json:"activeUdpFlows"`
	// Transport is "tls" or "quic", that of the edge's tunnel.
	Transport string `json:"transport"`
	// UDPDatagramsDropped counts the datagrams of the edge's flows the hub
	// dropped since the edge connected: targets' replies the tunnel's queue
	// could not take (it was congested), clients' datagrams a target's
	// socket could not take at once, and over QUIC clients' datagrams the
	// transport dropped (not those quic-go drops inside itself).
	UDPDatagramsDropped uint64 `json:"udpDatagramsDropped"`
}

// EdgeStatus is the result of getEdgeStatus.
type EdgeStatus struct {
	Running       bool    `json:"running"`
	Connected     bool    `json:"connected"`
	PublicIP      *string `json:"publicIp"`
	ActiveStreams int     `json:"activeStreams"`
	// ListenPorts and ListenPortsUDP are the TCP and UDP ports bound now.
	ListenPorts    []int `json:"listenPorts"`
	ListenPortsUDP []int `json:"listenPortsUdp"`
	// FirewallRefused counts the clients and flows the firewall refused.
	FirewallRefused uint64 `json:"firewallRefused"`
	// Transport is "tls" or "quic", that of the live tunnel (the first
	// connected hub's), or null while none is up.
	Transport *string `json:"transport"`
	// Hubs is each hub's tunnel; Connected is true while any is up.
	Hubs []HubLinkStatus `json:"hubs"`
	// LastError says why the tunnel is down ("" while connected or never tried).
	LastError string `json:"lastError,omitempty"`
	// ReconnectAttempts counts failed connection attempts since the last success.
	ReconnectAttempts int `json:"reconnectAttempts"`
	// Connections is how many tunnel connections are up (0 while disconnected).
	Connections int `json:"connections"`
	// ActiveUDPFlows is the UDP flows open now.
	ActiveUDPFlows int `json:"activeUdpFlows"`
	// UDPDatagramsDropped counts the client datagrams dropped: the tunnel's
	// queue was full, there was no tunnel or the hub carries no UDP, the
	// flow cap could not make room, or the kernel dropped them at a port's
	// full socket buffer (Linux; the edge reads no faster than UDP's budget
	// while TCP streams are busy); over QUIC also replies the transport
	// dropped (not those quic-go drops inside itself).
	UDPDatagramsDropped uint64 `json:"udpDatagramsDropped"`
}

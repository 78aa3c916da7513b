package bridge

import (
	"encoding/json"
	"runtime"

	"github.com/serve-zone/remoteingress/internal/params"
	"github.com/serve-zone/remoteingress/tunnel"
)

// pingResult is the result of ping.
type pingResult struct {
	Pong bool `json:"pong"`
}

// startHubResult is the result of startHub.
type startHubResult struct {
	Started    bool `json:"started"`
	TunnelPort int  `json:"tunnelPort"`
	// QUICPort is the UDP port of the hub's QUIC listener, 0 when off.
	QUICPort int `json:"quicPort"`
	// MetricsAddress is the bound metricsListen address, when one was asked for.
	MetricsAddress string `json:"metricsAddress,omitempty"`
}

// startedResult is the result of startEdge.
type startedResult struct {
	Started bool `json:"started"`
	// MetricsAddress is the bound metricsListen address, when one was asked for.
	MetricsAddress string `json:"metricsAddress,omitempty"`
}

// stoppedResult is the result of stopHub and stopEdge.
type stoppedResult struct {
	Stopped bool `json:"stopped"`
}

// updatedResult is the result of updateAllowedEdges.
type updatedResult struct {
	Updated bool `json:"updated"`
	Count   int  `json:"count"`
}

// hubStatusResult is the result of getHubStatus.
type hubStatusResult struct {
	tunnel.HubStatus
	EventsDropped uint64 `json:"eventsDropped"`
	// Goroutines is the process's goroutine count, for leak checks from outside.
	Goroutines int `json:"goroutines"`
}

// edgeStatusResult is the result of getEdgeStatus.
type edgeStatusResult struct {
	tunnel.EdgeStatus
	EventsDropped uint64 `json:"eventsDropped"`
	// Goroutines is the process's goroutine count, for leak checks from outside.
	Goroutines int `json:"goroutines"`
}

// ping answers {"pong":true}; its params are ignored.
func (s *server) ping(*json.RawMessage) (any, error) {
	return pingResult{Pong: true}, nil
}

// startHub starts the hub: tunnelPort? (8443, 0 = any), targetHost?,
// listenHost?, tlsCertPem? with tlsKeyPem?, metricsListen?. Absent params take the engine's
// defaults (tunnel.DefaultHubConfig).
func (s *server) startHub(raw *json.RawMessage) (any, error) {
	cfg := tunnel.DefaultHubConfig()
	if err := decodeParams("startHub", params.StartHub, raw, &cfg); err != nil {
		return nil, err
	}
	if err := checkConfig("startHub", cfg.Validate()); err != nil {
		return nil, err
	}
	port, metricsAddr, err := s.hub.start(cfg)
	if err != nil {
		return nil, checkConfig("startHub", err)
	}
	return startHubResult{Started: true, TunnelPort: port, QUICPort: s.hub.quicPort(), MetricsAddress: metricsAddr}, nil
}

// stopHub stops the hub; it succeeds when none runs.
func (s *server) stopHub(*json.RawMessage) (any, error) {
	if err := s.hub.stop(); err != nil {
		s.hub.log.Warn("hub did not stop cleanly", "error", err)
	}
	return stoppedResult{Stopped: true}, nil
}

// updateAllowedEdges replaces the allow list: edges [{id, secret}].
func (s *server) updateAllowedEdges(raw *json.RawMessage) (any, error) {
	var list params.AllowedEdges
	if err := decodeParams("updateAllowedEdges", params.UpdateAllowedEdges, raw, &list); err != nil {
		return nil, err
	}
	edges := list.Edges
	if err := checkConfig("updateAllowedEdges", tunnel.ValidateEdgeList(edges)); err != nil {
		return nil, err
	}
	if err := s.hub.setAllowed(edges); err != nil {
		return nil, checkConfig("updateAllowedEdges", err)
	}
	return updatedResult{Updated: true, Count: len(edges)}, nil
}

// getHubStatus reports the hub.
func (s *server) getHubStatus(*json.RawMessage) (any, error) {
	return hubStatusResult{HubStatus: s.hub.status(), EventsDropped: s.events.droppedCount(), Goroutines: runtime.NumGoroutine()}, nil
}

// startEdge starts the edge: hubHost, hubPort? (8443), edgeId, secret,
// listenPorts, listenHost?, stunIntervalSecs? (300; 0 disables STUN), stunServer?,
// optional hub verification: hubCertSha256?, hubCa?, hubServerName?, and
// tunnelConnections? (default 2), metricsListen?. Absent params take the engine's defaults
// (tunnel.DefaultEdgeConfig).
func (s *server) startEdge(raw *json.RawMessage) (any, error) {
	cfg := tunnel.DefaultEdgeConfig()
	if err := decodeEdgeParams(raw, &cfg); err != nil {
		return nil, err
	}
	if err := checkConfig("startEdge", cfg.Validate()); err != nil {
		return nil, err
	}
	metricsAddr, err := s.edge.start(cfg)
	if err != nil {
		return nil, checkConfig("startEdge", err)
	}
	return startedResult{Started: true, MetricsAddress: metricsAddr}, nil
}

// stopEdge stops the edge; it succeeds when none runs.
func (s *server) stopEdge(*json.RawMessage) (any, error) {
	if err := s.edge.stop(); err != nil {
		s.edge.log.Warn("edge did not stop cleanly", "error", err)
	}
	return stoppedResult{Stopped: true}, nil
}

// getEdgeStatus reports the edge.
func (s *server) getEdgeStatus(*json.RawMessage) (any, error) {
	return edgeStatusResult{EdgeStatus: s.edge.status(), EventsDropped: s.events.droppedCount(), Goroutines: runtime.NumGoroutine()}, nil
}

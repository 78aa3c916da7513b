package bridge

import (
	"encoding/json"
	"math"
	"runtime"
	"time"

	"github.com/serve-zone/remoteingress/tunnel"
)

// Defaults of the method params (CONTRACT section 3).
const (
	defaultTunnelPort   = 8443
	defaultTargetHost   = "127.0.0.1"
	defaultStunInterval = 300
	defaultStunServer   = "stun.cloudflare.com:3478"
)

// pingResult is the result of ping.
type pingResult struct {
	Pong bool `json:"pong"`
}

// startHubResult is the result of startHub.
type startHubResult struct {
	Started    bool `json:"started"`
	TunnelPort int  `json:"tunnelPort"`
}

// startedResult is the result of startEdge.
type startedResult struct {
	Started bool `json:"started"`
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
// listenHost?, tlsCertPem? with tlsKeyPem?.
func (s *server) startHub(raw *json.RawMessage) (any, error) {
	p := readParams("startHub", raw)
	cfg := tunnel.HubConfig{
		TunnelPort: p.integer("tunnelPort", 0, 65535, false, defaultTunnelPort),
		TargetHost: p.str("targetHost", false, defaultTargetHost),
		ListenHost: p.str("listenHost", false, ""),
		TLSCertPEM: p.str("tlsCertPem", false, ""),
		TLSKeyPEM:  p.str("tlsKeyPem", false, ""),
	}
	if (cfg.TLSCertPEM == "") != (cfg.TLSKeyPEM == "") {
		p.fail("tlsCertPem and tlsKeyPem must be given together")
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	port, err := s.hub.start(cfg)
	if err != nil {
		return nil, err
	}
	return startHubResult{Started: true, TunnelPort: port}, nil
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
	p := readParams("updateAllowedEdges", raw)
	edges := p.edges("edges")
	if err := p.done(); err != nil {
		return nil, err
	}
	if err := s.hub.setAllowed(edges); err != nil {
		return nil, err
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
// tunnelConnections? (default 1).
func (s *server) startEdge(raw *json.RawMessage) (any, error) {
	p := readParams("startEdge", raw)
	cfg := tunnel.EdgeConfig{
		HubHost:      p.str("hubHost", true, ""),
		HubPort:      p.integer("hubPort", 1, 65535, false, defaultTunnelPort),
		EdgeID:       p.str("edgeId", true, ""),
		Secret:       p.str("secret", true, ""),
		ListenPorts:  p.ports("listenPorts"),
		ListenHost:   p.str("listenHost", false, ""),
		StunInterval: stunInterval(p.integer("stunIntervalSecs", 0, math.MaxInt32, false, defaultStunInterval)),
		StunServer:   p.str("stunServer", false, defaultStunServer),

		HubCertSHA256: p.str("hubCertSha256", false, ""),
		HubCAPEM:      p.str("hubCa", false, ""),
		HubServerName: p.str("hubServerName", false, ""),
		Connections:   p.integer("tunnelConnections", 1, tunnel.MaxTunnelConnections, false, 0),
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	if err := s.edge.start(cfg); err != nil {
		return nil, err
	}
	return startedResult{Started: true}, nil
}

// stunInterval converts stunIntervalSecs; 0 disables STUN (a negative
// interval for the engine).
func stunInterval(secs int) time.Duration {
	if secs == 0 {
		return -1
	}
	return time.Duration(secs) * time.Second
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

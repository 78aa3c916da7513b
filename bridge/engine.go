package bridge

import (
	"context"

	"github.com/serve-zone/remoteingress/tunnel"
)

// hubEngine is what the bridge uses of a running *tunnel.Hub.
type hubEngine interface {
	Port() int
	SetAllowedEdges([]tunnel.EdgeCredential) error
	Status() tunnel.HubStatus
	Metrics() tunnel.HubMetrics
	// Shutdown tells the edges to go elsewhere, lets open streams finish
	// until ctx ends, then closes everything.
	Shutdown(ctx context.Context) error
	Close() error
}

// edgeEngine is what the bridge uses of a running *tunnel.Edge.
type edgeEngine interface {
	Status() tunnel.EdgeStatus
	Metrics() tunnel.EdgeMetrics
	Close() error
}

// engine starts hubs and edges; tests replace it.
type engine struct {
	startHub  func(tunnel.HubConfig, []tunnel.EdgeCredential) (hubEngine, error)
	startEdge func(tunnel.EdgeConfig) (edgeEngine, error)
}

// tunnelEngine is the real engine of package tunnel.
func tunnelEngine() engine {
	return engine{
		startHub: func(cfg tunnel.HubConfig, allowed []tunnel.EdgeCredential) (hubEngine, error) {
			h, err := tunnel.StartHub(cfg, allowed)
			if err != nil {
				return nil, err
			}
			return h, nil
		},
		startEdge: func(cfg tunnel.EdgeConfig) (edgeEngine, error) {
			e, err := tunnel.StartEdge(cfg)
			if err != nil {
				return nil, err
			}
			return e, nil
		},
	}
}

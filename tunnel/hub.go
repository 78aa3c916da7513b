package tunnel

import "errors"

// Hub accepts edge tunnels and forwards their streams to the target host.
type Hub struct{}

// StartHub validates cfg, loads or generates the TLS certificate, binds the
// tunnel port and starts accepting edges allowed by the given list.
func StartHub(cfg HubConfig, allowed []EdgeCredential) (*Hub, error) {
	return nil, errors.New("not implemented yet")
}

// Port is the bound tunnel port.
func (h *Hub) Port() int { return 0 }

// SetAllowedEdges replaces the allow list; edges no longer allowed, or whose
// secret changed, are disconnected at once.
func (h *Hub) SetAllowedEdges(edges []EdgeCredential) error { return nil }

// Status reports the hub's state.
func (h *Hub) Status() HubStatus { return HubStatus{} }

// Close stops accepting, closes every tunnel and stream, and waits for them.
func (h *Hub) Close() error { return nil }

// ValidateEdgeList checks an allow list: ids and secrets non-empty, ids unique.
func ValidateEdgeList(edges []EdgeCredential) error { return nil }

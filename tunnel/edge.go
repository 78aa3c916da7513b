package tunnel

import "errors"

// Edge listens on public ports and carries each connection over the tunnel.
type Edge struct{}

// StartEdge validates cfg, binds every listen port (or none) and starts the
// tunnel and STUN loops in the background. An unreachable hub is not an error.
func StartEdge(cfg EdgeConfig) (*Edge, error) { return nil, errors.New("not implemented yet") }

// Status reports the edge's state.
func (e *Edge) Status() EdgeStatus { return EdgeStatus{} }

// Close stops the listeners, the tunnel and every stream, and waits for them.
func (e *Edge) Close() error { return nil }

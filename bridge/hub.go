package bridge

import (
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/serve-zone/remoteingress/internal/monitor"
	"github.com/serve-zone/remoteingress/tunnel"
)

// errShuttingDown answers start requests that arrive while Run shuts down.
var errShuttingDown = errors.New("the bridge is shutting down")

// hubRole owns the hub side of the process: at most one running hub and the
// allow list, which outlives the hub.
type hubRole struct {
	eng  engine
	log  *slog.Logger
	sink tunnel.EventSink
	mons *monitors

	// op serializes start, stop, updateAllowedEdges and shutdown. Status
	// never takes it.
	op      sync.Mutex
	allowed []tunnel.EdgeCredential // guarded by op
	closed  bool                    // guarded by op
	metrics *monitorUse             // the hub's metricsListen server; guarded by op

	mu  sync.Mutex // guards hub; never held across engine calls
	hub hubEngine
}

// current returns the running hub, or nil.
func (r *hubRole) current() hubEngine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hub
}

// set replaces the running hub.
func (r *hubRole) set(h hubEngine) {
	r.mu.Lock()
	r.hub = h
	r.mu.Unlock()
}

// start starts a hub with the current allow list and returns its port and
// the bound address of its metrics listener ("" without cfg.MetricsListen).
// The metrics address is bound first: when it or the hub fails, nothing
// runs.
func (r *hubRole) start(cfg tunnel.HubConfig) (int, string, error) {
	r.op.Lock()
	defer r.op.Unlock()
	if r.closed {
		return 0, "", errShuttingDown
	}
	if r.current() != nil {
		return 0, "", errors.New("hub is already running")
	}
	mon, err := r.mons.acquire(cfg.MetricsListen)
	if err != nil {
		return 0, "", err
	}
	cfg.Logger = r.log
	cfg.Events = r.sink
	h, err := r.eng.startHub(cfg, slices.Clone(r.allowed))
	if err != nil {
		mon.end(nil)
		return 0, "", err
	}
	r.set(h)
	r.metrics = mon
	addr := mon.attach(func(s *monitor.Server) { s.SetHub(h) }, r.log)
	r.log.Debug("hub started", "tunnelPort", h.Port(), "allowedEdges", len(r.allowed))
	return h.Port(), addr, nil
}

// stop stops the hub if one runs.
func (r *hubRole) stop() error {
	r.op.Lock()
	defer r.op.Unlock()
	return r.stopLocked()
}

// stopLocked stops the hub; r.op is held.
func (r *hubRole) stopLocked() error {
	h := r.current()
	if h == nil {
		return nil
	}
	r.set(nil)
	r.metrics.end(func(s *monitor.Server) { s.SetHub(nil) })
	r.metrics = nil
	err := h.Close()
	r.log.Debug("hub stopped")
	return err
}

// setAllowed replaces the allow list, in the running hub too. The caller has
// validated it (tunnel.ValidateEdgeList); on error the old list stays.
func (r *hubRole) setAllowed(edges []tunnel.EdgeCredential) error {
	r.op.Lock()
	defer r.op.Unlock()
	if h := r.current(); h != nil {
		if err := h.SetAllowedEdges(slices.Clone(edges)); err != nil {
			return err
		}
	}
	r.allowed = slices.Clone(edges)
	r.log.Info("allowed edges updated", "count", len(edges))
	return nil
}

// status reports the hub; connectedEdges is never null.
func (r *hubRole) status() tunnel.HubStatus {
	st := tunnel.HubStatus{}
	if h := r.current(); h != nil {
		st = h.Status()
	}
	if st.ConnectedEdges == nil {
		st.ConnectedEdges = []tunnel.ConnectedEdge{}
	}
	return st
}

// shutdown stops the hub and refuses later starts.
func (r *hubRole) shutdown() error {
	r.op.Lock()
	defer r.op.Unlock()
	r.closed = true
	return r.stopLocked()
}

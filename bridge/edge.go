package bridge

import (
	"errors"
	"log/slog"
	"sync"

	"github.com/serve-zone/remoteingress/internal/monitor"
	"github.com/serve-zone/remoteingress/tunnel"
)

// edgeRole owns the edge side of the process: at most one running edge.
type edgeRole struct {
	eng  engine
	log  *slog.Logger
	sink tunnel.EventSink
	mons *monitors

	// op serializes start, stop and shutdown. Status never takes it.
	op      sync.Mutex
	closed  bool        // guarded by op
	metrics *monitorUse // the edge's metricsListen server; guarded by op

	mu   sync.Mutex // guards edge; never held across engine calls
	edge edgeEngine
}

// current returns the running edge, or nil.
func (r *edgeRole) current() edgeEngine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.edge
}

// set replaces the running edge.
func (r *edgeRole) set(e edgeEngine) {
	r.mu.Lock()
	r.edge = e
	r.mu.Unlock()
}

// start starts an edge; it returns once every listen port is bound, with
// the bound address of its metrics listener ("" without cfg.MetricsListen).
// The metrics address is bound first: when it or the edge fails, nothing
// runs.
func (r *edgeRole) start(cfg tunnel.EdgeConfig) (string, error) {
	r.op.Lock()
	defer r.op.Unlock()
	if r.closed {
		return "", errShuttingDown
	}
	if r.current() != nil {
		return "", errors.New("edge is already running")
	}
	mon, err := r.mons.acquire(cfg.MetricsListen)
	if err != nil {
		return "", err
	}
	cfg.Logger = r.log
	cfg.Events = r.sink
	e, err := r.eng.startEdge(cfg)
	if err != nil {
		mon.end(nil)
		return "", err
	}
	r.set(e)
	r.metrics = mon
	addr := mon.attach(func(s *monitor.Server) { s.SetEdge(e) }, r.log)
	r.log.Debug("edge started", "edgeId", cfg.EdgeID, "hubHost", cfg.HubHost, "hubPort", cfg.HubPort, "listenPorts", cfg.ListenPorts)
	return addr, nil
}

// stop stops the edge if one runs.
func (r *edgeRole) stop() error {
	r.op.Lock()
	defer r.op.Unlock()
	return r.stopLocked()
}

// stopLocked stops the edge; r.op is held.
func (r *edgeRole) stopLocked() error {
	e := r.current()
	if e == nil {
		return nil
	}
	r.set(nil)
	r.metrics.end(func(s *monitor.Server) { s.SetEdge(nil) })
	r.metrics = nil
	err := e.Close()
	r.log.Debug("edge stopped")
	return err
}

// status reports the edge; listenPorts is never null.
func (r *edgeRole) status() tunnel.EdgeStatus {
	st := tunnel.EdgeStatus{}
	if e := r.current(); e != nil {
		st = e.Status()
	}
	if st.ListenPorts == nil {
		st.ListenPorts = []int{}
	}
	return st
}

// shutdown stops the edge and refuses later starts.
func (r *edgeRole) shutdown() error {
	r.op.Lock()
	defer r.op.Unlock()
	r.closed = true
	return r.stopLocked()
}

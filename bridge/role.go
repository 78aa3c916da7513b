package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/serve-zone/remoteingress/internal/monitor"
	"github.com/serve-zone/remoteingress/tunnel"
)

// errShuttingDown answers start requests that arrive while Run shuts down.
var errShuttingDown = errors.New("the bridge is shutting down")

// role owns one side of the process, the hub or the edge: at most one
// running engine of kind E, and its metricsListen server. hubRole and
// edgeRole add what is their own.
type role[E interface{ Close() error }] struct {
	name string // "hub" or "edge"
	eng  engine
	log  *slog.Logger
	sink tunnel.EventSink
	mons *monitors
	// show puts the running engine on a metrics server, or, with on false,
	// takes it off.
	show func(s *monitor.Server, e E, on bool)
	// end stops a running engine; nil: Close.
	end func(e E) error

	// op serializes start, stop, shutdown (and the hub's allow-list
	// updates). Status never takes it.
	op      sync.Mutex
	closed  bool        // guarded by op
	metrics *monitorUse // the engine's metricsListen server; guarded by op

	mu      sync.Mutex // guards cur and running; never held across engine calls
	cur     E
	running bool
}

// current returns the running engine; ok is false when none runs.
func (r *role[E]) current() (e E, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, r.running
}

// set replaces the running engine (none when running is false).
func (r *role[E]) set(e E, running bool) {
	r.mu.Lock()
	r.cur, r.running = e, running
	r.mu.Unlock()
}

// startLocked starts an engine with start, once the metrics address is
// bound: when that or the engine fails, nothing runs. It returns the engine
// and the bound metrics address ("" without metricsListen). r.op is held.
func (r *role[E]) startLocked(metricsListen string, start func() (E, error)) (E, string, error) {
	var none E
	if r.closed {
		return none, "", errShuttingDown
	}
	if _, ok := r.current(); ok {
		return none, "", fmt.Errorf("%s is already running", r.name)
	}
	mon, err := r.mons.acquire(metricsListen)
	if err != nil {
		return none, "", err
	}
	e, err := start()
	if err != nil {
		mon.end(nil)
		return none, "", err
	}
	r.set(e, true)
	r.metrics = mon
	addr := mon.attach(func(s *monitor.Server) { r.show(s, e, true) }, r.log)
	return e, addr, nil
}

// stop stops the engine if one runs.
func (r *role[E]) stop() error {
	r.op.Lock()
	defer r.op.Unlock()
	return r.stopLocked()
}

// stopLocked stops the engine; r.op is held.
func (r *role[E]) stopLocked() error {
	e, ok := r.current()
	if !ok {
		return nil
	}
	var none E
	r.set(none, false)
	r.metrics.end(func(s *monitor.Server) { r.show(s, e, false) })
	r.metrics = nil
	var err error
	if r.end != nil {
		err = r.end(e)
	} else {
		err = e.Close()
	}
	r.log.Debug(r.name + " stopped")
	return err
}

// shutdown stops the engine and refuses later starts.
func (r *role[E]) shutdown() error {
	r.op.Lock()
	defer r.op.Unlock()
	r.closed = true
	return r.stopLocked()
}

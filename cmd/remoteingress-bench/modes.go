package main

import (
	"encoding/json"
	"fmt"
	"time"
)

// mode is one set-up clients are pointed at: direct, relay or tunnel.
type mode struct {
	name  string
	addr  string   // where clients connect
	tgt   *target  // where their connections end
	procs []*child // the set-up's own processes (none for direct)
	hub   *mgmt    // tunnel only: the (first) hub
	edge  *mgmt    // tunnel only
	// hubs are the tunnel's hub processes now (hub first); allHubs every
	// one it had, a hub killed and started again included; hubAddrs and
	// hubPorts are each hub's tunnel address and port, as the edge lists
	// them.
	hubs     []*mgmt
	allHubs  []*mgmt
	hubAddrs []string
	hubPorts []int
	info     map[string]any
	// idleKiB is the RSS of the fresh processes, before any row ran: the
	// base of the memory rows, so that what earlier rows left in a heap (and
	// a process may or may not have handed back since) counts for no side.
	idleKiB int64

	metricsAddrs []string // the hub's and the edge's metricsListen, when on
	secret       string   // the edge's (tunnel only)
}

// updateEdge sends the hub the allow list of this set-up's one edge, with
// extra members in its entry (listenPorts, firewall); it returns when the
// answer has arrived.
func (m *mode) updateEdge(extra map[string]any) error {
	entry := map[string]any{"id": tunnelEdgeID, "secret": m.secret}
	for k, v := range extra {
		entry[k] = v
	}
	raw, err := m.hub.call("updateAllowedEdges", map[string]any{"edges": []any{entry}}, 30*time.Second)
	if err != nil {
		return err
	}
	var r struct {
		Updated bool `json:"updated"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || !r.Updated {
		return fmt.Errorf("updateAllowedEdges answered %s", raw)
	}
	return nil
}

// cpuSeconds is the user+system CPU time of the set-up's processes so far,
// summed and each.
func (m *mode) cpuSeconds() (float64, map[string]float64, error) {
	var sum float64
	each := map[string]float64{}
	for _, p := range m.procs {
		s, err := cpuSeconds(p.pid())
		if err != nil {
			return 0, nil, err
		}
		sum += s
		each[p.name] = s
	}
	return sum, each, nil
}

// counters returns procCounters of each of the set-up's processes.
func (m *mode) counters() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, p := range m.procs {
		out[p.name] = procCounters(p.pid())
	}
	return out
}

// rssKiB is the summed resident set size of the set-up's processes, and
// each one's.
func (m *mode) rssKiB() (int64, map[string]int64, error) {
	var sum int64
	each := map[string]int64{}
	for _, p := range m.procs {
		r, err := rssKiB(p.pid())
		if err != nil {
			return 0, nil, err
		}
		sum += r
		each[p.name] = r
	}
	return sum, each, nil
}

// streams returns the hubs' (summed) and the edge's activeStreams (tunnel
// only).
func (m *mode) streams() (hub, edge int, err error) {
	for _, h := range m.hubs {
		raw, err := h.call("getHubStatus", map[string]any{}, 10*time.Second)
		if err != nil {
			return 0, 0, err
		}
		var hs struct {
			ConnectedEdges []struct {
				ActiveStreams int `json:"activeStreams"`
			} `json:"connectedEdges"`
		}
		if err := json.Unmarshal(raw, &hs); err != nil {
			return 0, 0, err
		}
		for _, e := range hs.ConnectedEdges {
			hub += e.ActiveStreams
		}
	}
	raw, err := m.edge.call("getEdgeStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return 0, 0, err
	}
	var es struct {
		ActiveStreams int `json:"activeStreams"`
	}
	if err := json.Unmarshal(raw, &es); err != nil {
		return 0, 0, err
	}
	return hub, es.ActiveStreams, nil
}

// settle waits until every connection of the set-up has ended at the target
// (and, for the tunnel, on the hub and the edge). It returns what was left
// after timeout.
func (m *mode) settle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		active := m.tgt.active.Load()
		hub, edge := 0, 0
		var err error
		if m.hub != nil {
			hub, edge, err = m.streams()
		}
		if err == nil && active == 0 && hub == 0 && edge == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("still open after %v: %d target connections, %d hub streams, %d edge streams", timeout, active, hub, edge)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkTransport fails unless the edge's tunnel and the hub's one connected
// edge both run on transport (a tunnel measured as QUIC that fell back to
// TLS would be measured as the wrong thing).
func (m *mode) checkTransport(transport string) error {
	raw, err := m.edge.call("getEdgeStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return err
	}
	var es struct {
		Transport *string `json:"transport"`
	}
	if err := json.Unmarshal(raw, &es); err != nil {
		return err
	}
	if es.Transport == nil || *es.Transport != transport {
		return fmt.Errorf("the edge's tunnel runs on transport %v, want %q (getEdgeStatus: %s)", es.Transport, transport, raw)
	}
	raw, err = m.hub.call("getHubStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return err
	}
	var hs struct {
		ConnectedEdges []struct {
			Transport string `json:"transport"`
		} `json:"connectedEdges"`
	}
	if err := json.Unmarshal(raw, &hs); err != nil {
		return err
	}
	for _, e := range hs.ConnectedEdges {
		if e.Transport != transport {
			return fmt.Errorf("the hub sees an edge on transport %q, want %q", e.Transport, transport)
		}
	}
	m.info["transport"] = transport
	return nil
}

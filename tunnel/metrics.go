package tunnel

import (
	"slices"
	"strings"
	"sync/atomic"
)

// Counters for a metrics endpoint. The data path only adds to atomics:
// each session counts into the streamCounters of its owner (the hub keeps
// one per edge id, the edge one for itself), with no lock and no lookup per
// frame. (*Hub).Metrics and (*Edge).Metrics read them when asked, which is
// what a scrape does; this package knows nothing of metrics formats.
//
// Directions are the traffic's, the same on both sides: "in" is what
// clients send toward the targets (client → edge → hub → target), "out" is
// what targets send back. Only stream payload counts, not frame headers,
// control frames or TLS.

// cacheLine keeps counters that different goroutines write apart.
const cacheLine = 64

// streamCounters counts the streams and payload bytes of the sessions that
// share it. Each field is written by a different party: opened and closed
// when streams start and finish, sent by the stream goroutines (under the
// session's write lock), recv by the session's reader; padding keeps one
// from invalidating the others' cache line.
type streamCounters struct {
	opened atomic.Uint64 // streams started: OPEN received (hub) or about to be sent (edge)
	closed atomic.Uint64 // streams finished; opened-closed are active
	_      [cacheLine - 16]byte
	sent   atomic.Uint64 // DATA payload bytes sent into the tunnel
	_      [cacheLine - 8]byte
	recv   atomic.Uint64 // DATA payload bytes received from the tunnel
	_      [cacheLine - 8]byte
	flows  atomic.Int64 // UDP flows open now
}

// countInto makes the session count its streams and bytes in c, which
// other sessions of the same owner may share; call it before the session runs.
func (s *session) countInto(c *streamCounters) { s.stats = c }

// StreamMetrics counts the streams and bytes of one side (the edge) or of
// one edge at the hub.
type StreamMetrics struct {
	// StreamsActive is the number of streams open now.
	StreamsActive uint64
	// StreamsTotal is the number of streams opened since the counters began
	// (the edge's start; at the hub, the edge id's arrival in the allowed list).
	StreamsTotal uint64
	// BytesIn is stream payload from clients toward targets.
	BytesIn uint64
	// BytesOut is stream payload from targets back to clients.
	BytesOut uint64
	// UDPFlowsActive is the number of UDP flows open now (0: no UDP yet).
	UDPFlowsActive uint64
}

// streams reads c; hub says which side counted (which of sent and recv is "in").
func (c *streamCounters) streams(hub bool) StreamMetrics {
	closed := c.closed.Load() // before opened: active never goes below 0
	m := StreamMetrics{StreamsTotal: c.opened.Load()}
	m.StreamsActive = m.StreamsTotal - min(closed, m.StreamsTotal)
	m.UDPFlowsActive = uint64(max(0, c.flows.Load()))
	if hub {
		m.BytesIn, m.BytesOut = c.recv.Load(), c.sent.Load()
	} else {
		m.BytesIn, m.BytesOut = c.sent.Load(), c.recv.Load()
	}
	return m
}

// HubMetrics is a snapshot of a hub's counters (see (*Hub).Metrics).
type HubMetrics struct {
	// Ready: the hub listens and has an allowed list (given to StartHub,
	// even an empty one, or set with SetAllowedEdges since).
	Ready bool
	// EdgesConnected is the number of edges with a tunnel up now.
	EdgesConnected int
	// AuthFailures counts proofs found wrong or for an unknown edge id.
	AuthFailures uint64
	// Edges has one entry per edge id of the allowed list, sorted by id,
	// from the moment the id is allowed (all zero until it connects).
	Edges []HubEdgeMetrics
}

// HubEdgeMetrics is one allowed edge in HubMetrics.
type HubEdgeMetrics struct {
	EdgeID string
	StreamMetrics
}

// EdgeMetrics is a snapshot of an edge's counters (see (*Edge).Metrics).
type EdgeMetrics struct {
	// EdgeID is the edge's id, as configured.
	EdgeID string
	// Ready: the edge runs, its listen ports are bound and its tunnel is up.
	Ready bool
	// TunnelUp: the tunnel to the hub is up now.
	TunnelUp bool
	// Reconnects counts connection attempts after the first: every retry
	// after a failed attempt or a lost tunnel, successful or not.
	Reconnects uint64
	// FirewallRefused counts client connections refused by the edge
	// firewall (0 until there is one).
	FirewallRefused uint64
	StreamMetrics
}

// Metrics returns a snapshot of the hub's counters, for a metrics endpoint.
// It is cheap (no stream is looked at) and safe to call at any time, also
// after Close.
func (h *Hub) Metrics() HubMetrics {
	h.mu.Lock()
	m := HubMetrics{
		Ready:          !h.closed && h.allowedLoaded,
		EdgesConnected: len(h.edges),
		AuthFailures:   h.throttle.failed(),
		Edges:          make([]HubEdgeMetrics, 0, len(h.traffic)),
	}
	for id, c := range h.traffic {
		m.Edges = append(m.Edges, HubEdgeMetrics{EdgeID: id, StreamMetrics: c.streams(true)})
	}
	h.mu.Unlock()
	slices.SortFunc(m.Edges, func(a, b HubEdgeMetrics) int { return strings.Compare(a.EdgeID, b.EdgeID) })
	return m
}

// setTrafficLocked keeps the counters of the edge ids in allow, adds zero
// ones for new ids and drops the rest; the caller holds h.mu. Sessions of a
// dropped id (being disconnected) keep counting into counters nobody reads.
func (h *Hub) setTrafficLocked(allow map[string]allowedEdge) {
	next := make(map[string]*streamCounters, len(allow))
	for id := range allow {
		if c := h.traffic[id]; c != nil {
			next[id] = c
		} else {
			next[id] = new(streamCounters)
		}
	}
	h.traffic = next
}

// trafficFor returns the counters a new session of edge id counts into.
func (h *Hub) trafficFor(id string) *streamCounters {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.traffic[id]; c != nil {
		return c
	}
	return new(streamCounters) // no longer allowed: register will refuse it
}

// Metrics returns a snapshot of the edge's counters, for a metrics endpoint.
// It is cheap and safe to call at any time, also after Close.
func (e *Edge) Metrics() EdgeMetrics {
	e.mu.Lock()
	up := e.anyUpLocked()
	running := !e.closed
	portsOK := e.portsOK
	e.mu.Unlock()
	return EdgeMetrics{
		EdgeID:          e.cfg.EdgeID,
		Ready:           running && up && portsOK,
		TunnelUp:        up,
		Reconnects:      e.reconnects.Load(),
		FirewallRefused: e.firewall.refused(),
		StreamMetrics:   e.traffic.streams(false),
	}
}

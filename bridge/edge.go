package bridge

import (
	"log/slog"

	"github.com/serve-zone/remoteingress/internal/monitor"
	"github.com/serve-zone/remoteingress/tunnel"
)

// edgeRole owns the edge side of the process: at most one running edge.
type edgeRole struct {
	role[edgeEngine]
}

func newEdgeRole(eng engine, log *slog.Logger, sink tunnel.EventSink, mons *monitors) *edgeRole {
	return &edgeRole{role: role[edgeEngine]{name: "edge", eng: eng, log: log, sink: sink, mons: mons,
		show: func(s *monitor.Server, e edgeEngine, on bool) {
			if on {
				s.SetEdge(e)
			} else {
				s.SetEdge(nil)
			}
		}}}
}

// start starts an edge; it returns once every listen port is bound, with
// the bound address of its metrics listener ("" without cfg.MetricsListen).
// The metrics address is bound first: when it or the edge fails, nothing
// runs.
func (r *edgeRole) start(cfg tunnel.EdgeConfig) (string, error) {
	r.op.Lock()
	defer r.op.Unlock()
	cfg.Logger = r.log
	cfg.Events = r.sink
	_, addr, err := r.startLocked(cfg.MetricsListen, func() (edgeEngine, error) { return r.eng.startEdge(cfg) })
	if err != nil {
		return "", err
	}
	r.log.Debug("edge started", "edgeId", cfg.EdgeID, "hubHost", cfg.HubHost, "hubPort", cfg.HubPort, "listenPorts", cfg.ListenPorts)
	return addr, nil
}

// status reports the edge; listenPorts, listenPortsUdp and hubs are never null.
func (r *edgeRole) status() tunnel.EdgeStatus {
	st := tunnel.EdgeStatus{}
	if e, ok := r.current(); ok {
		st = e.Status()
	}
	if st.ListenPorts == nil {
		st.ListenPorts = []int{}
	}
	if st.ListenPortsUDP == nil {
		st.ListenPortsUDP = []int{}
	}
	if st.Hubs == nil {
		st.Hubs = []tunnel.HubLinkStatus{}
	}
	return st
}

package bridge

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/serve-zone/remoteingress/internal/monitor"
	"github.com/serve-zone/remoteingress/tunnel"
)

// hubRole owns the hub side of the process: at most one running hub and the
// allow list, which outlives the hub.
type hubRole struct {
	role[hubEngine]
	allowed []tunnel.EdgeCredential // guarded by op
}

func newHubRole(eng engine, log *slog.Logger, sink tunnel.EventSink, mons *monitors) *hubRole {
	return &hubRole{role: role[hubEngine]{name: "hub", eng: eng, log: log, sink: sink, mons: mons,
		show: func(s *monitor.Server, h hubEngine, on bool) {
			if on {
				s.SetHub(h)
			} else {
				s.SetHub(nil)
			}
		},
		end: drainHub}}
}

// hubDrainLimit is how long stopHub (and the bridge's own shutdown) lets
// the open streams finish, after telling the edges to go to their other
// hubs (CONTRACT section 12); it keeps the exit within section 1's 5 s.
const hubDrainLimit = 4 * time.Second

// drainHub stops a hub gracefully within hubDrainLimit; streams still open
// then are cut, which is no error of the stop.
func drainHub(h hubEngine) error {
	ctx, cancel := context.WithTimeout(context.Background(), hubDrainLimit)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// start starts a hub with the current allow list and returns its port and
// the bound address of its metrics listener ("" without cfg.MetricsListen).
// The metrics address is bound first: when it or the hub fails, nothing
// runs.
func (r *hubRole) start(cfg tunnel.HubConfig) (int, string, error) {
	r.op.Lock()
	defer r.op.Unlock()
	cfg.Logger = r.log
	cfg.Events = r.sink
	h, addr, err := r.startLocked(cfg.MetricsListen, func() (hubEngine, error) {
		return r.eng.startHub(cfg, slices.Clone(r.allowed))
	})
	if err != nil {
		return 0, "", err
	}
	r.log.Debug("hub started", "tunnelPort", h.Port(), "allowedEdges", len(r.allowed))
	return h.Port(), addr, nil
}

// quicPort is the running hub's QUIC port (0: none, or no hub).
func (r *hubRole) quicPort() int { return r.status().QUICPort }

// setAllowed replaces the allow list, in the running hub too. The caller has
// validated it (tunnel.ValidateEdgeList); on error the old list stays.
func (r *hubRole) setAllowed(edges []tunnel.EdgeCredential) error {
	r.op.Lock()
	defer r.op.Unlock()
	if h, ok := r.current(); ok {
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
	if h, ok := r.current(); ok {
		st = h.Status()
	}
	if st.ConnectedEdges == nil {
		st.ConnectedEdges = []tunnel.ConnectedEdge{}
	}
	return st
}

package standalone

import (
	"log/slog"

	"github.com/serve-zone/remoteingress/internal/monitor"
)

// metrics is the metricsListen server of a standalone run; a nil one (no
// metricsListen) does nothing.
type metrics struct{ srv *monitor.Server }

// startMetrics binds addr before the engine starts, so that an address that
// cannot be bound stops the start; "" starts nothing.
func startMetrics(addr, version string, log *slog.Logger) (*metrics, error) {
	if addr == "" {
		return nil, nil
	}
	srv, err := monitor.Listen(addr, version)
	if err != nil {
		return nil, err
	}
	log.Info("metrics listening", "metricsAddress", srv.Addr())
	return &metrics{srv: srv}, nil
}

func (m *metrics) setHub(h monitor.HubSource) {
	if m != nil {
		m.srv.SetHub(h)
	}
}

func (m *metrics) setEdge(e monitor.EdgeSource) {
	if m != nil {
		m.srv.SetEdge(e)
	}
}

func (m *metrics) close() {
	if m != nil {
		_ = m.srv.Close()
	}
}

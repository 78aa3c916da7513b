package bridge

import (
	"log/slog"
	"net"
	"sync"

	"github.com/serve-zone/remoteingress/internal/monitor"
)

// monitors runs the process's metricsListen servers (internal/monitor). A
// hub and an edge that ask for the same address share one server, which
// reports on both (its series tell the sides apart with side="hub"|"edge");
// it closes when the last of them stops. "The same" is the address as
// given, or the bound address of a server already running; a port of 0
// always binds a new server.
type monitors struct {
	version string

	mu      sync.Mutex
	servers []*sharedMonitor
}

// sharedMonitor is one server and how many roles use it.
type sharedMonitor struct {
	srv   *monitor.Server
	asked string // the address it was asked for
	users int
}

// monitorUse is one role's use of a server: none (srv nil) when the role
// asked for no metricsListen.
type monitorUse struct {
	srv     *monitor.Server
	release func()
}

// acquire returns a use of the server for addr, binding it when none runs
// there (the error names the address); an empty addr asks for none. The
// role ends the use when it stops, or when its engine fails to start.
func (m *monitors) acquire(addr string) (*monitorUse, error) {
	if addr == "" {
		return &monitorUse{}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var sm *sharedMonitor
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
		for _, s := range m.servers {
			if s.asked == addr || s.srv.Addr() == addr {
				sm = s
				break
			}
		}
	}
	if sm == nil {
		srv, err := monitor.Listen(addr, m.version)
		if err != nil {
			return nil, err
		}
		sm = &sharedMonitor{srv: srv, asked: addr}
		m.servers = append(m.servers, sm)
	}
	sm.users++
	var once sync.Once
	return &monitorUse{srv: sm.srv, release: func() { once.Do(func() { m.release(sm) }) }}, nil
}

// attach hands the server its side (set calls SetHub or SetEdge), logs the
// address and returns it; "" when there is no server.
func (u *monitorUse) attach(set func(*monitor.Server), log *slog.Logger) string {
	if u == nil || u.srv == nil {
		return ""
	}
	set(u.srv)
	log.Info("metrics listening", "metricsAddress", u.srv.Addr())
	return u.srv.Addr()
}

// end takes the side off the server again (unset, when not nil) and gives
// the server back; the last use closes it. A nil or empty use does nothing.
func (u *monitorUse) end(unset func(*monitor.Server)) {
	if u == nil || u.srv == nil {
		return
	}
	if unset != nil {
		unset(u.srv)
	}
	u.release()
}

// release drops one use of sm and closes it after the last.
func (m *monitors) release(sm *sharedMonitor) {
	m.mu.Lock()
	sm.users--
	last := sm.users == 0
	if last {
		for i, s := range m.servers {
			if s == sm {
				m.servers = append(m.servers[:i], m.servers[i+1:]...)
				break
			}
		}
	}
	m.mu.Unlock()
	if last {
		_ = sm.srv.Close()
	}
}

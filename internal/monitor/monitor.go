// Package monitor serves a hub's and an edge's metrics and health over
// HTTP, the metricsListen listener:
//
//   - /metrics: Prometheus text format. The engine's counters are atomics
//     in package tunnel, read once per scrape through (*tunnel.Hub).Metrics
//     and (*tunnel.Edge).Metrics, so the data path never touches this
//     package. Process and Go runtime series (process_*, go_*) come from
//     github.com/VictoriaMetrics/metrics.
//   - /healthz: 200 while the process serves.
//   - /readyz: 200 while every side attached is ready (the hub listens with
//     its allowed list loaded; the edge's tunnel is up and its ports are
//     bound), else 503 with the reason.
//
// One Server may report a hub, an edge, or both (one process running both
// sides with one metricsListen). Series that both sides have (streams,
// bytes, UDP flows) carry side="hub" or side="edge" either way, so a query
// means the same whatever runs beside what. No series carries a client
// address or a secret: the only label values are the version, the Go
// version, edge ids, the side and the direction.
package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/serve-zone/remoteingress/tunnel"
)

// HubSource is what the server reads of a hub: *tunnel.Hub.
type HubSource interface{ Metrics() tunnel.HubMetrics }

// EdgeSource is what the server reads of an edge: *tunnel.Edge.
type EdgeSource interface{ Metrics() tunnel.EdgeMetrics }

// Server is a running metrics listener.
type Server struct {
	ln      net.Listener
	srv     *http.Server
	version string
	served  chan struct{} // closed when Serve has returned

	mu   sync.Mutex
	hub  HubSource
	edge EdgeSource
}

// Listen binds addr (host:port; port 0 picks a free one, see Addr) and
// serves on it until Close. version is the build_info version label.
func Listen(addr, version string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return nil, fmt.Errorf("cannot listen on metrics address %s: %v", addr, err)
	}
	vm.ExposeMetadata(true) // TYPE lines for process_* and go_* too
	s := &Server{ln: ln, version: version, served: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          nil,
	}
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr is the bound address, host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetHub attaches the hub the server reports on; nil detaches it.
func (s *Server) SetHub(h HubSource) {
	s.mu.Lock()
	s.hub = h
	s.mu.Unlock()
}

// SetEdge attaches the edge the server reports on; nil detaches it.
func (s *Server) SetEdge(e EdgeSource) {
	s.mu.Lock()
	s.edge = e
	s.mu.Unlock()
}

func (s *Server) sources() (HubSource, EdgeSource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hub, s.edge
}

// Close stops the listener; scrapes under way get a second to finish.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.served
	return err
}

// Handler serves /metrics, /healthz and /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	return mux
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body+"\n")
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	ready, why := s.Ready()
	if !ready {
		plain(w, http.StatusServiceUnavailable, why)
		return
	}
	plain(w, http.StatusOK, "ready")
}

// Ready reports whether every side attached is ready, and if not, why.
// With no side attached it is not.
func (s *Server) Ready() (bool, string) {
	hub, edge := s.sources()
	var why []string
	if hub == nil && edge == nil {
		return false, "not ready: nothing running"
	}
	if hub != nil && !hub.Metrics().Ready {
		why = append(why, "hub: not listening with an allowed list")
	}
	if edge != nil {
		switch m := edge.Metrics(); {
		case !m.TunnelUp:
			why = append(why, "edge: tunnel down")
		case !m.Ready:
			why = append(why, "edge: listen ports not bound")
		}
	}
	if len(why) > 0 {
		return false, "not ready: " + strings.Join(why, "; ")
	}
	return true, ""
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	var b bytes.Buffer
	s.WriteMetrics(&b)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b.Bytes())
}

// WriteMetrics writes every series in Prometheus text format to w.
func (s *Server) WriteMetrics(w io.Writer) {
	hub, edge := s.sources()
	var hm *tunnel.HubMetrics
	var em *tunnel.EdgeMetrics
	if hub != nil {
		m := hub.Metrics()
		hm = &m
	}
	if edge != nil {
		m := edge.Metrics()
		em = &m
	}
	writeSeries(w, s.version, hm, em)
	vm.WriteProcessMetrics(w)
}

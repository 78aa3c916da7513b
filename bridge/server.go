package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/go-multierror"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/serve-zone/remoteingress/internal/ratelog"
)

// method handles one request's params and returns its result.
type method func(params *json.RawMessage) (any, error)

// server dispatches requests to the hub and edge roles. Run wraps it in a
// boundedHandler, which runs each request on its own goroutine.
type server struct {
	log     *slog.Logger
	failLog *ratelog.Limiter // the "request failed" warnings
	events  *eventQueue
	params  *paramStore
	hub     *hubRole
	edge    *edgeRole
	mons    *monitors // the metricsListen servers of hub and edge
	methods map[string]method
}

// newServer returns a server whose engines report to events.
func newServer(eng engine, events *eventQueue, params *paramStore, log *slog.Logger) *server {
	mons := &monitors{version: "dev"}
	s := &server{
		mons:    mons,
		log:     log,
		failLog: ratelog.New(log, slog.LevelWarn, "%d more requests failed"),
		events:  events,
		params:  params,
		hub:     newHubRole(eng, log.With("role", "hub"), events.sink, mons),
		edge:    newEdgeRole(eng, log.With("role", "edge"), events.sink, mons),
	}
	s.methods = map[string]method{
		"ping":               s.ping,
		"startHub":           s.startHub,
		"stopHub":            s.stopHub,
		"updateAllowedEdges": s.updateAllowedEdges,
		"getHubStatus":       s.getHubStatus,
		"startEdge":          s.startEdge,
		"stopEdge":           s.stopEdge,
		"getEdgeStatus":      s.getEdgeStatus,
	}
	s.methods["createConnectionToken"] = s.createConnectionToken // token.go
	return s
}

// quickMethods answer at once from memory and ignore their params.
var quickMethods = map[string]bool{"ping": true, "getHubStatus": true, "getEdgeStatus": true}

// quick reports whether method answers at once and ignores its params: a
// quick method, or an unknown one.
func (s *server) quick(method string) bool {
	_, known := s.methods[method]
	return quickMethods[method] || !known
}

// Handle implements jsonrpc2.Handler, handling req on the caller's goroutine.
func (s *server) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	s.serve(ctx, conn, req, s.params.take(req))
}

// serve runs req with params and answers it, unless it is a notification.
func (s *server) serve(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request, params *json.RawMessage) {
	result, err := s.call(req, params)
	if req.Notif {
		return
	}
	// A failed write is logged once by the stream; nothing more to do here.
	if err != nil {
		_ = conn.ReplyWithError(ctx, req.ID, toWireError(err))
		return
	}
	_ = conn.Reply(ctx, req.ID, result)
}

// call runs the request's method; a panic becomes an internal error.
func (s *server) call(req *jsonrpc2.Request, params *json.RawMessage) (result any, err error) {
	m, ok := s.methods[req.Method]
	if !ok {
		err = unknownMethod(req.Method)
		s.failLog.Log("request failed", "method", truncate(req.Method, 64), "id", truncate(req.ID.String(), 64), "error", err)
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("request panicked", "method", req.Method, "panic", fmt.Sprint(p))
			result, err = nil, &rpcError{code: jsonrpc2.CodeInternalError, message: req.Method + ": internal error"}
		}
	}()
	result, err = m(params)
	if err != nil {
		s.failLog.Log("request failed", "method", req.Method, "id", truncate(req.ID.String(), 64), "error", err)
	}
	return result, err
}

// shutdown stops the hub and the edge at the same time and gathers their errors.
func (s *server) shutdown() error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		result *multierror.Error
	)
	stop := func(name string, f func() error) {
		defer wg.Done()
		if err := f(); err != nil {
			mu.Lock()
			result = multierror.Append(result, fmt.Errorf("stopping %s: %w", name, err))
			mu.Unlock()
		}
	}
	wg.Add(2)
	go stop("hub", s.hub.shutdown)
	go stop("edge", s.edge.shutdown)
	wg.Wait()
	return result.ErrorOrNil()
}

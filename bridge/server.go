package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/go-multierror"
	"github.com/sourcegraph/jsonrpc2"
)

// method handles one request's params and returns its result.
type method func(params *json.RawMessage) (any, error)

// server is the jsonrpc2.Handler: it dispatches requests to the hub and
// edge roles. Wrapped in jsonrpc2.AsyncHandler, each request runs on its own
// goroutine, so a slow start never holds up ping or a status request.
type server struct {
	log     *slog.Logger
	events  *eventQueue
	params  *paramStore
	hub     *hubRole
	edge    *edgeRole
	methods map[string]method
}

// newServer returns a server whose engines report to events.
func newServer(eng engine, events *eventQueue, params *paramStore, log *slog.Logger) *server {
	s := &server{
		log:    log,
		events: events,
		params: params,
		hub:    &hubRole{eng: eng, log: log.With("role", "hub"), sink: events.sink},
		edge:   &edgeRole{eng: eng, log: log.With("role", "edge"), sink: events.sink},
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
	return s
}

// Handle implements jsonrpc2.Handler.
func (s *server) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	result, err := s.call(req, s.params.take(req))
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
		s.log.Warn("request failed", "method", truncate(req.Method, 64), "id", req.ID.String(), "error", err)
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
		s.log.Warn("request failed", "method", req.Method, "id", req.ID.String(), "error", err)
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

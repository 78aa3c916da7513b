package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel"
)

// waitLimit bounds every wait of a test; reaching it is a failure, not a pass.
const waitLimit = 20 * time.Second

// fakeHub is a hubEngine recording what the bridge does to it.
type fakeHub struct {
	mu        sync.Mutex
	port      int
	allowed   []tunnel.EdgeCredential
	setErr    error
	closeErr  error
	closeGate chan struct{} // Close waits for it when non-nil
	closed    bool
	status    tunnel.HubStatus
}

func (h *fakeHub) Port() int { return h.port }

func (h *fakeHub) SetAllowedEdges(edges []tunnel.EdgeCredential) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.setErr != nil {
		return h.setErr
	}
	h.allowed = edges
	return nil
}

func (h *fakeHub) Status() tunnel.HubStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status
}

func (h *fakeHub) Metrics() tunnel.HubMetrics { return tunnel.HubMetrics{Ready: true} }

func (h *fakeHub) Close() error {
	if h.closeGate != nil {
		<-h.closeGate
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	return h.closeErr
}

// Shutdown is Close: the fake has no streams to drain.
func (h *fakeHub) Shutdown(context.Context) error { return h.Close() }

func (h *fakeHub) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

func (h *fakeHub) allowedEdges() []tunnel.EdgeCredential {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.allowed
}

// fakeEdge is an edgeEngine recording its Close.
type fakeEdge struct {
	mu       sync.Mutex
	closeErr error
	closed   bool
	status   tunnel.EdgeStatus
}

func (e *fakeEdge) Status() tunnel.EdgeStatus { return e.status }

func (e *fakeEdge) Metrics() tunnel.EdgeMetrics { return tunnel.EdgeMetrics{} }

func (e *fakeEdge) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return e.closeErr
}

func (e *fakeEdge) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// hubStart is one call of the fake startHub.
type hubStart struct {
	cfg     tunnel.HubConfig
	allowed []tunnel.EdgeCredential
}

// fakeEngine is an engine whose hubs and edges are fakes.
type fakeEngine struct {
	mu         sync.Mutex
	hubStarts  []hubStart
	edgeStarts []tunnel.EdgeConfig
	hubs       []*fakeHub
	edges      []*fakeEdge

	// newHub and newEdge customise what is started (may be nil).
	newHub  func() *fakeHub
	newEdge func() *fakeEdge
	// startHubErr and startEdgeErr make starts fail.
	startHubErr, startEdgeErr error
	// edgeEntered receives when startEdge is entered; edgeGate holds it there.
	edgeEntered chan struct{}
	edgeGate    chan struct{}
	// panicOnEdge makes startEdge panic.
	panicOnEdge bool
}

func (f *fakeEngine) engine() engine {
	return engine{
		startHub: func(cfg tunnel.HubConfig, allowed []tunnel.EdgeCredential) (hubEngine, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.hubStarts = append(f.hubStarts, hubStart{cfg, allowed})
			if f.startHubErr != nil {
				return nil, f.startHubErr
			}
			h := &fakeHub{port: 40001}
			if f.newHub != nil {
				h = f.newHub()
			}
			h.allowed = allowed
			f.hubs = append(f.hubs, h)
			return h, nil
		},
		startEdge: func(cfg tunnel.EdgeConfig) (edgeEngine, error) {
			if f.edgeEntered != nil {
				f.edgeEntered <- struct{}{}
			}
			if f.edgeGate != nil {
				<-f.edgeGate
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.panicOnEdge {
				panic("engine exploded")
			}
			f.edgeStarts = append(f.edgeStarts, cfg)
			if f.startEdgeErr != nil {
				return nil, f.startEdgeErr
			}
			e := &fakeEdge{}
			if f.newEdge != nil {
				e = f.newEdge()
			}
			f.edges = append(f.edges, e)
			return e, nil
		},
	}
}

func (f *fakeEngine) hubStartCalls() []hubStart {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]hubStart(nil), f.hubStarts...)
}

func (f *fakeEngine) edgeStartCalls() []tunnel.EdgeConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]tunnel.EdgeConfig(nil), f.edgeStarts...)
}

func (f *fakeEngine) lastHub() *fakeHub {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.hubs) == 0 {
		return nil
	}
	return f.hubs[len(f.hubs)-1]
}

func (f *fakeEngine) lastEdge() *fakeEdge {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.edges) == 0 {
		return nil
	}
	return f.edges[len(f.edges)-1]
}

// msg is one output line, decoded; it covers both dialects.
type msg struct {
	raw     string
	ID      json.RawMessage `json:"id"`
	Success *bool           `json:"success"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// reply is a response, the same for both dialects.
type reply struct {
	ok      bool
	result  json.RawMessage
	message string
	code    int64 // JSON-RPC error code; 0 in the management dialect
}

// session is one run of the bridge over in-memory pipes.
type session struct {
	t       testing.TB
	dialect Dialect
	in      *io.PipeWriter
	lines   chan string
	stash   []msg
	logs    *testutil.SyncBuffer
	out     *testutil.SyncBuffer // every line written, for secret checks
	done    chan error
	cancel  context.CancelFunc
	nextID  int

	closeOnce sync.Once
}

// sessionOption adjusts the options of a session.
type sessionOption func(*Options)

// startSession runs the bridge with eng until the test ends.
func startSession(t testing.TB, dialect Dialect, eng engine, opts ...sessionOption) *session {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &session{
		t:       t,
		dialect: dialect,
		in:      inW,
		lines:   make(chan string, 1<<14),
		logs:    &testutil.SyncBuffer{},
		out:     &testutil.SyncBuffer{},
		done:    make(chan error, 1),
	}
	o := Options{
		Dialect: dialect,
		Version: "1.2.3-test",
		Logger:  slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- run(ctx, inR, outW, o, eng) }()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(s.lines)
		br := bufio.NewReaderSize(outR, 1<<16)
		for {
			l, err := br.ReadString('\n')
			if len(l) > 0 {
				s.out.Write([]byte(l))
				s.lines <- strings.TrimSuffix(l, "\n")
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		s.closeInput()
		select {
		case <-s.done:
		case <-time.After(waitLimit):
			t.Errorf("Run did not return after the input closed")
		}
		cancel()
		outW.Close()
		inR.Close()
		<-readerDone
	})
	return s
}

// closeInput ends the input (EOF).
func (s *session) closeInput() { s.closeOnce.Do(func() { s.in.Close() }) }

// wait returns Run's result.
// finish ends the session (stdin closed, Run returned without error) and
// checks that secret appears nowhere in what it wrote.
func (s *session) finish(t testing.TB, secret string) {
	t.Helper()
	s.closeInput()
	if err := s.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if strings.Contains(s.out.String(), secret) || strings.Contains(s.logs.String(), secret) {
		t.Fatalf("the secret was written:\nout:\n%s\nlogs:\n%s", s.out.String(), s.logs.String())
	}
}

func (s *session) wait() error {
	s.t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // keep it for the cleanup
		return err
	case <-time.After(waitLimit):
		s.t.Fatalf("Run did not return")
		return nil
	}
}

// send writes one line to the bridge.
func (s *session) send(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		s.t.Fatalf("writing to the bridge: %v", err)
	}
}

// next returns the next output line not yet consumed.
func (s *session) next() msg {
	s.t.Helper()
	if len(s.stash) > 0 {
		m := s.stash[0]
		s.stash = s.stash[1:]
		return m
	}
	return s.read()
}

// read reads a fresh output line.
func (s *session) read() msg {
	s.t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			s.t.Fatalf("output ended")
		}
		var m msg
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			s.t.Fatalf("output line is not JSON: %q: %v", truncate(l, 200), err)
		}
		m.raw = l
		return m
	case <-time.After(waitLimit):
		s.t.Fatalf("no output line within %s", waitLimit)
		return msg{}
	}
}

// waitFor returns the first output line matching match; others stay for next.
func (s *session) waitFor(match func(msg) bool) msg {
	s.t.Helper()
	for i, m := range s.stash {
		if match(m) {
			s.stash = append(s.stash[:i:i], s.stash[i+1:]...)
			return m
		}
	}
	for {
		m := s.read()
		if match(m) {
			return m
		}
		s.stash = append(s.stash, m)
	}
}

// responseTo waits for the answer to id (raw JSON).
func (s *session) responseTo(id string) msg {
	s.t.Helper()
	return s.waitFor(func(m msg) bool {
		return m.Event == "" && m.Method == "" && string(m.ID) == id
	})
}

// request sends a request with a fresh string id and returns the id.
func (s *session) request(method string, params any) string {
	s.t.Helper()
	s.nextID++
	id := fmt.Sprintf(`"req_%d"`, s.nextID)
	s.send(s.requestLine(id, method, params))
	return id
}

// requestLine renders a request in the session's dialect.
func (s *session) requestLine(id, method string, params any) string {
	s.t.Helper()
	obj := map[string]any{"id": json.RawMessage(id), "method": method}
	if s.dialect == JSONRPC {
		obj["jsonrpc"] = "2.0"
	}
	if params != nil {
		obj["params"] = params
	}
	b, err := json.Marshal(obj)
	if err != nil {
		s.t.Fatal(err)
	}
	return string(b)
}

// call sends a request and waits for its answer.
func (s *session) call(method string, params any) reply {
	s.t.Helper()
	return s.replyOf(s.responseTo(s.request(method, params)))
}

// mustCall is call that fails the test on an error answer.
func (s *session) mustCall(method string, params any) json.RawMessage {
	s.t.Helper()
	r := s.call(method, params)
	if !r.ok {
		s.t.Fatalf("%s failed: %s (code %d)", method, r.message, r.code)
	}
	return r.result
}

// replyOf interprets an answer line in the session's dialect, checking its shape.
func (s *session) replyOf(m msg) reply {
	s.t.Helper()
	return replyOf(s.t, s.dialect, m)
}

// replyOf interprets an answer line of dialect d, checking its shape.
func replyOf(t testing.TB, d Dialect, m msg) reply {
	t.Helper()
	if d == Management {
		if m.Success == nil {
			t.Fatalf("answer without success: %s", m.raw)
		}
		if *m.Success {
			if m.Result == nil || m.Error != nil {
				t.Fatalf("bad success answer: %s", m.raw)
			}
			return reply{ok: true, result: m.Result}
		}
		var text string
		if err := json.Unmarshal(m.Error, &text); err != nil || text == "" {
			t.Fatalf("failure without an error string: %s", m.raw)
		}
		return reply{message: text}
	}
	if m.JSONRPC != "2.0" || m.Success != nil {
		t.Fatalf("not a JSON-RPC 2.0 response: %s", m.raw)
	}
	if m.Error == nil {
		return reply{ok: true, result: m.Result}
	}
	var e struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(m.Error, &e); err != nil || e.Code == 0 || e.Message == "" {
		t.Fatalf("bad JSON-RPC error: %s", m.raw)
	}
	return reply{message: e.Message, code: e.Code}
}

// dialects runs f once per dialect.
func dialects(t *testing.T, f func(t *testing.T, d Dialect)) {
	for _, d := range []Dialect{Management, JSONRPC} {
		t.Run(d.String(), func(t *testing.T) { f(t, d) })
	}
}

// expectPingNext sends a ping and checks that its answer is the next line.
func (s *session) expectPingNext() {
	s.t.Helper()
	id := s.request("ping", nil)
	m := s.next()
	if string(m.ID) != id {
		s.t.Fatalf("expected the answer to ping %s next, got %s", id, m.raw)
	}
	r := s.replyOf(m)
	if !r.ok || string(r.result) != `{"pong":true}` {
		s.t.Fatalf("ping: got %s", m.raw)
	}
}

// skipReady consumes the ready line.
func (s *session) skipReady() {
	s.t.Helper()
	m := s.next()
	if m.Event != EventReady && m.Method != EventReady {
		s.t.Fatalf("first line is not the ready event: %s", m.raw)
	}
}

// errFake is an error for fakes to return.
var errFake = errors.New("fake failure")

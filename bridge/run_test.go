package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// discardLogger drops everything.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestEndOfInputStopsEverything(t *testing.T) {
	eng := &fakeEngine{}
	s := startSession(t, Management, eng.engine())
	s.skipReady()
	s.mustCall("startHub", nil)
	s.mustCall("startEdge", edgeParams(80))
	s.closeInput()
	if err := s.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !eng.lastHub().isClosed() || !eng.lastEdge().isClosed() {
		t.Fatal("hub or edge left running")
	}
}

func TestCancelStopsEverything(t *testing.T) {
	eng := &fakeEngine{}
	s := startSession(t, JSONRPC, eng.engine())
	s.skipReady()
	s.mustCall("startHub", nil)
	s.mustCall("startEdge", edgeParams(80))
	s.cancel()
	if err := s.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !eng.lastHub().isClosed() || !eng.lastEdge().isClosed() {
		t.Fatal("hub or edge left running")
	}
}

func TestShutdownGathersErrors(t *testing.T) {
	eng := &fakeEngine{
		newHub:  func() *fakeHub { return &fakeHub{port: 1, closeErr: errors.New("hub close failed")} },
		newEdge: func() *fakeEdge { return &fakeEdge{closeErr: errors.New("edge close failed")} },
	}
	s := startSession(t, Management, eng.engine())
	s.skipReady()
	s.mustCall("startHub", nil)
	s.mustCall("startEdge", edgeParams(80))
	s.closeInput()
	err := s.wait()
	if err == nil || !strings.Contains(err.Error(), "stopping hub: hub close failed") || !strings.Contains(err.Error(), "stopping edge: edge close failed") {
		t.Fatalf("Run: %v", err)
	}
}

func TestShutdownIsBounded(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	eng := &fakeEngine{newHub: func() *fakeHub { return &fakeHub{port: 1, closeGate: gate} }}
	const budget = 300 * time.Millisecond
	s := startSession(t, Management, eng.engine(), func(o *Options) { o.ShutdownTimeout = budget })
	s.skipReady()
	s.mustCall("startHub", nil)
	start := time.Now()
	s.cancel()
	err := s.wait()
	if took := time.Since(start); took > budget+2*time.Second {
		t.Fatalf("Run took %s to return with a budget of %s", took, budget)
	}
	if err == nil || !strings.Contains(err.Error(), "took longer than") {
		t.Fatalf("Run: %v", err)
	}
}

func TestStartAfterShutdownIsRefused(t *testing.T) {
	eng := &fakeEngine{}
	srv := newServer(eng.engine(), newEventQueue(1, discardLogger()), &paramStore{}, discardLogger())
	if err := srv.shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.startHub(nil); !errors.Is(err, errShuttingDown) {
		t.Fatalf("startHub after shutdown: %v", err)
	}
	if _, err := srv.startEdge(rawJSON(`{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[1]}`)); !errors.Is(err, errShuttingDown) {
		t.Fatalf("startEdge after shutdown: %v", err)
	}
	if n := len(eng.hubStartCalls()) + len(eng.edgeStartCalls()); n != 0 {
		t.Fatalf("%d starts reached the engine", n)
	}
}

// rawJSON is a *json.RawMessage of s.
func rawJSON(s string) *json.RawMessage { r := json.RawMessage(s); return &r }

// failingWriter fails every write, like a pipe whose reader is gone.
type failingWriter struct{ writes int }

func (w *failingWriter) Write([]byte) (int, error) { w.writes++; return 0, io.ErrClosedPipe }

func TestBrokenOutputDoesNotStopTheBridge(t *testing.T) {
	eng := &fakeEngine{}
	var logs testutil.SyncBuffer
	in := strings.NewReader(strings.Repeat(`{"id":"p","method":"ping"}`+"\n", 5) +
		`{"id":"h","method":"startHub"}` + "\n" + "garbage\n" + `{"id":"e","method":"startEdge","params":{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[1]}}`)
	w := &failingWriter{}
	err := run(context.Background(), in, w, Options{Dialect: Management, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, eng.engine())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The requests after the first failed write were still carried out...
	if len(eng.hubStartCalls()) != 1 || len(eng.edgeStartCalls()) != 1 || !eng.lastHub().isClosed() {
		t.Fatal("requests were not carried out after the output broke")
	}
	// ...but nothing more was written, and the failure was logged once.
	if w.writes != 1 {
		t.Errorf("%d writes to a broken output, want 1", w.writes)
	}
	if n := strings.Count(logs.String(), "output is gone"); n != 1 {
		t.Errorf("output failure logged %d times:\n%s", n, logs.String())
	}
}

func TestReadErrorIsReturned(t *testing.T) {
	r := io.MultiReader(strings.NewReader(`{"id":"p","method":"ping"}`+"\n"), errReader{})
	var out testutil.SyncBuffer
	err := run(context.Background(), r, &out, Options{Dialect: Management}, (&fakeEngine{}).engine())
	if err == nil || !strings.Contains(err.Error(), "reading input: disk on fire") {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(out.String(), `{"id":"p","success":true,"result":{"pong":true}}`) {
		t.Fatalf("the request before the error was not answered: %s", out.String())
	}
}

// errReader fails every read.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestUnknownDialect(t *testing.T) {
	if err := Run(context.Background(), strings.NewReader(""), io.Discard, Options{}); err == nil {
		t.Fatal("Run accepted the zero dialect")
	}
}

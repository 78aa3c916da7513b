package bridge

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/serve-zone/remoteingress/tunnel"
)

// hubSink starts a fake hub in s and returns the event sink the engine got.
func hubSink(t *testing.T, s *session, eng *fakeEngine) tunnel.EventSink {
	t.Helper()
	s.mustCall("startHub", map[string]any{"tunnelPort": 0})
	calls := eng.hubStartCalls()
	if len(calls) != 1 || calls[0].cfg.Events == nil {
		t.Fatal("the hub got no event sink")
	}
	return calls[0].cfg.Events
}

func TestEventsAreDelivered(t *testing.T) {
	want := map[Dialect][]string{
		Management: {
			`{"event":"edgeConnected","data":{"edgeId":"edge-1","remoteAddr":"127.0.0.1:5000"}}`,
			`{"event":"streamOpened","data":{"edgeId":"edge-1","streamId":7}}`,
			`{"event":"tunnelConnected","data":{}}`,
		},
		JSONRPC: {
			`{"jsonrpc":"2.0","method":"edgeConnected","params":{"edgeId":"edge-1","remoteAddr":"127.0.0.1:5000"}}`,
			`{"jsonrpc":"2.0","method":"streamOpened","params":{"edgeId":"edge-1","streamId":7}}`,
			`{"jsonrpc":"2.0","method":"tunnelConnected","params":{}}`,
		},
	}
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		sink := hubSink(t, s, eng)
		sink(tunnel.Event{Name: tunnel.EventEdgeConnected, Data: tunnel.EdgeEvent{EdgeID: "edge-1", RemoteAddr: "127.0.0.1:5000"}})
		sink(tunnel.Event{Name: tunnel.EventStreamOpened, Data: tunnel.StreamEvent{EdgeID: "edge-1", StreamID: 7}})
		sink(tunnel.Event{Name: tunnel.EventTunnelConnected})
		var got []any
		for range want[d] {
			got = append(got, jsonOf(t, s.next().raw))
		}
		var w []any
		for _, l := range want[d] {
			w = append(w, jsonOf(t, l))
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
		}
	})
}

// gatedWriter blocks every Write while closed.
type gatedWriter struct {
	w    io.Writer
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.w.Write(p)
}

func (g *gatedWriter) close() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedWriter) open() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

func TestEventsAreDroppedAndCountedWhenTheOutputBlocks(t *testing.T) {
	const queue, sent = 4, 1000
	eng := &fakeEngine{}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	gw := &gatedWriter{w: outW}
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), inR, gw, Options{Dialect: Management, EventQueueSize: queue}, eng.engine())
	}()
	lines := make(chan string, 2*sent)
	go func() {
		defer close(lines)
		br := bufio.NewReader(outR)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimSpace(l)
		}
	}()
	t.Cleanup(func() {
		inW.Close()
		<-done
		outW.Close()
		inR.Close()
		for range lines {
		}
	})
	next := func() msg {
		t.Helper()
		select {
		case l := <-lines:
			var m msg
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			m.raw = l
			return m
		case <-time.After(waitLimit):
			t.Fatal("no output")
			return msg{}
		}
	}
	send := func(l string) {
		t.Helper()
		if _, err := io.WriteString(inW, l+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	if m := next(); m.Event != EventReady {
		t.Fatalf("first line %s", m.raw)
	}
	send(`{"id":"h","method":"startHub","params":{"tunnelPort":0}}`)
	if m := next(); string(m.ID) != `"h"` {
		t.Fatalf("startHub: %s", m.raw)
	}
	sink := eng.hubStartCalls()[0].cfg.Events

	// The parent stops reading: every sink call must still return at once.
	gw.close()
	sunk := make(chan struct{})
	go func() {
		defer close(sunk)
		for i := range sent {
			sink(tunnel.Event{Name: tunnel.EventStreamOpened, Data: tunnel.StreamEvent{EdgeID: "e", StreamID: uint32(i)}})
		}
	}()
	select {
	case <-sunk:
	case <-time.After(waitLimit):
		t.Fatal("the event sink blocked while the output was blocked")
	}

	gw.open()
	send(`{"id":"st","method":"getHubStatus"}`)
	delivered := 0
	var status msg
	for {
		m := next()
		if m.Event == tunnel.EventStreamOpened {
			delivered++
			continue
		}
		if string(m.ID) == `"st"` {
			status = m
			break
		}
		t.Fatalf("unexpected line %s", m.raw)
	}
	var st struct {
		EventsDropped int `json:"eventsDropped"`
	}
	if err := json.Unmarshal(status.Result, &st); err != nil {
		t.Fatal(err)
	}
	// Events still queued may follow the status answer.
	for delivered+st.EventsDropped < sent {
		if m := next(); m.Event != tunnel.EventStreamOpened {
			t.Fatalf("unexpected line %s", m.raw)
		}
		delivered++
	}
	// The queue holds `queue` events and the drainer at most one more.
	if delivered < queue || delivered > queue+1 {
		t.Errorf("delivered %d events, want %d or %d", delivered, queue, queue+1)
	}
}

func TestEventQueueCountsFailedWrites(t *testing.T) {
	q := newEventQueue(8, discardLogger())
	for range 3 {
		q.sink(tunnel.Event{Name: "x"})
	}
	q.close()
	q.run(func(tunnel.Event) error { return io.ErrClosedPipe })
	if got := q.droppedCount(); got != 3 {
		t.Fatalf("dropped %d, want 3", got)
	}
}

func TestEventQueueFlushesOnClose(t *testing.T) {
	q := newEventQueue(8, discardLogger())
	q.sink(tunnel.Event{Name: "a"})
	q.sink(tunnel.Event{Name: "b"})
	q.close()
	var got []string
	q.run(func(ev tunnel.Event) error {
		got = append(got, ev.Name)
		if ev.Data == nil {
			t.Errorf("event %s has nil data", ev.Name)
		}
		return nil
	})
	if diff := cmp.Diff([]string{"a", "b"}, got); diff != "" {
		t.Fatalf("flushed (-want +got):\n%s", diff)
	}
}

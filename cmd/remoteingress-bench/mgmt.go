package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// mgmt is a remoteingress-bin process driven over the management dialect:
// requests on its stdin, responses and events read from its stdout by one
// goroutine that never stops reading (so the process's event queue is never
// what limits the data path).
type mgmt struct {
	*child
	label string

	wmu    sync.Mutex // one request line at a time on stdin
	nextID atomic.Int64

	mu       sync.Mutex
	pending  map[string]chan mgmtResponse
	events   map[string]int64
	notable  []eventRecord // events other than streamOpened/streamClosed
	badLines int
	version  string
	ready    chan struct{}

	streamOpened atomic.Int64
	streamClosed atomic.Int64
}

// mgmtResponse is a success or failure line.
type mgmtResponse struct {
	Result json.RawMessage
	Err    error
}

// eventRecord is one event kept for the report.
type eventRecord struct {
	At    float64         `json:"atSeconds"` // since the process started
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// keepEvents bounds the notable events kept.
const keepEvents = 100

// startMgmt starts bin --management and waits for its ready event.
func startMgmt(kids *children, name, bin string) (*mgmt, error) {
	m := &mgmt{
		label:   name,
		pending: map[string]chan mgmtResponse{},
		events:  map[string]int64{},
		ready:   make(chan struct{}),
	}
	started := time.Now()
	c, err := kids.start(name, func(r io.Reader) { m.readLoop(r, started) }, bin, "--management")
	if err != nil {
		return nil, err
	}
	m.child = c
	select {
	case <-m.ready:
		return m, nil
	case <-c.done:
		return nil, fmt.Errorf("%s exited before its ready event: %v; stderr: %q", name, c.waitErr, c.stderr.notableLines())
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("%s: no ready event within 5 s", name)
	}
}

var (
	prefixOpened = []byte(`{"event":"streamOpened"`)
	prefixClosed = []byte(`{"event":"streamClosed"`)
)

// readLoop reads stdout lines until EOF.
func (m *mgmt) readLoop(r io.Reader, started time.Time) {
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			big := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				big = append(big, line...)
			}
			line = big
		}
		if len(bytes.TrimSpace(line)) > 0 {
			m.handleLine(line, started)
		}
		if err != nil {
			m.failPending(fmt.Errorf("%s: stdout closed", m.label))
			return
		}
	}
}

// handleLine dispatches one line: the hot stream events are counted by
// prefix, everything else is decoded.
func (m *mgmt) handleLine(line []byte, started time.Time) {
	switch {
	case bytes.HasPrefix(line, prefixOpened):
		m.streamOpened.Add(1)
		return
	case bytes.HasPrefix(line, prefixClosed):
		m.streamClosed.Add(1)
		return
	}
	var msg struct {
		ID      *string         `json:"id"`
		Success *bool           `json:"success"`
		Result  json.RawMessage `json:"result"`
		Error   string          `json:"error"`
		Event   string          `json:"event"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(line, &msg); err != nil {
		m.mu.Lock()
		m.badLines++
		m.mu.Unlock()
		return
	}
	switch {
	case msg.ID != nil:
		m.mu.Lock()
		ch := m.pending[*msg.ID]
		delete(m.pending, *msg.ID)
		m.mu.Unlock()
		if ch == nil {
			return
		}
		resp := mgmtResponse{Result: msg.Result}
		if msg.Success == nil || !*msg.Success {
			resp.Err = fmt.Errorf("%s", msg.Error)
		}
		ch <- resp
	case msg.Event == "streamOpened":
		m.streamOpened.Add(1)
	case msg.Event == "streamClosed":
		m.streamClosed.Add(1)
	case msg.Event != "":
		m.mu.Lock()
		m.events[msg.Event]++
		if len(m.notable) < keepEvents {
			m.notable = append(m.notable, eventRecord{At: time.Since(started).Seconds(), Event: msg.Event, Data: msg.Data})
		}
		if msg.Event == "ready" {
			var d struct {
				Version string `json:"version"`
			}
			json.Unmarshal(msg.Data, &d)
			m.version = d.Version
			select {
			case <-m.ready:
			default:
				close(m.ready)
			}
		}
		m.mu.Unlock()
	default:
		m.mu.Lock()
		m.badLines++
		m.mu.Unlock()
	}
}

// failPending answers every waiting request with err.
func (m *mgmt) failPending(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ch := range m.pending {
		ch <- mgmtResponse{Err: err}
		delete(m.pending, id)
	}
}

// call sends one request and waits up to timeout for its answer.
func (m *mgmt) call(method string, params any, timeout time.Duration) (json.RawMessage, error) {
	id := "req_" + strconv.FormatInt(m.nextID.Add(1), 10)
	line, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	ch := make(chan mgmtResponse, 1)
	m.mu.Lock()
	m.pending[id] = ch
	m.mu.Unlock()
	m.wmu.Lock()
	_, err = m.child.stdin.Write(append(line, '\n'))
	m.wmu.Unlock()
	if err != nil {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
		return nil, fmt.Errorf("%s %s: %w", m.label, method, err)
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, fmt.Errorf("%s %s: %w", m.label, method, r.Err)
		}
		return r.Result, nil
	case <-time.After(timeout):
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
		return nil, fmt.Errorf("%s %s: no answer within %v", m.label, method, timeout)
	}
}

// eventCount is how many events of that name arrived (stream events
// included).
func (m *mgmt) eventCount(name string) int64 {
	switch name {
	case "streamOpened":
		return m.streamOpened.Load()
	case "streamClosed":
		return m.streamClosed.Load()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.events[name]
}

// waitEvent waits until at least n events of that name have arrived.
func (m *mgmt) waitEvent(name string, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for m.eventCount(name) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s event within %v", m.label, name, timeout)
		}
		if m.exited() {
			return fmt.Errorf("%s exited while waiting for %s", m.label, name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// eventSummary is the report of a management process's stdout.
type eventSummary struct {
	Counts   map[string]int64 `json:"counts"`
	Notable  []eventRecord    `json:"notable"`
	BadLines int              `json:"badLines"`
}

// summary returns the event counts and notable events.
func (m *mgmt) summary() eventSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := map[string]int64{}
	for k, v := range m.events {
		counts[k] = v
	}
	counts["streamOpened"] = m.streamOpened.Load()
	counts["streamClosed"] = m.streamClosed.Load()
	return eventSummary{Counts: counts, Notable: append([]eventRecord(nil), m.notable...), BadLines: m.badLines}
}

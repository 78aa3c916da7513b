package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/internal/mgmtclient"
)

// mgmt is a remoteingress-bin process driven over the management dialect:
// requests on its stdin, responses and events read from its stdout by one
// goroutine that never stops reading (so the process's event queue is never
// what limits the data path).
type mgmt struct {
	*child
	label  string
	client *mgmtclient.Client

	mu       sync.Mutex
	events   map[string]int64
	lastAt   map[string]time.Time // when the last event of each name arrived
	notable  []eventRecord        // events other than streamOpened/streamClosed
	timed    []timedEvent         // the same, with their arrival times (up to keepTimed)
	badLines int
	version  string
	ready    chan struct{}

	streamOpened atomic.Int64
	streamClosed atomic.Int64
}

// eventRecord is one event kept for the report.
type eventRecord struct {
	At    float64         `json:"atSeconds"` // since the process started
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// keepEvents bounds the notable events kept.
const keepEvents = 100

// timedEvent is an event other than streamOpened/streamClosed with when
// the bench read it.
type timedEvent struct {
	at   time.Time
	name string
	hub  string // its data's "hub", if any
}

// keepTimed bounds the timed events kept.
const keepTimed = 10000

// startMgmt starts bin --management and waits for its ready event.
func startMgmt(kids *children, name, bin string) (*mgmt, error) {
	m := &mgmt{
		label:  name,
		events: map[string]int64{},
		lastAt: map[string]time.Time{},
		ready:  make(chan struct{}),
	}
	started := time.Now()
	// The reader starts with the process: the client must exist before it.
	clientReady := make(chan struct{})
	c, err := kids.start(name, func(r io.Reader) { <-clientReady; m.readLoop(r, started) }, bin, "--management")
	if err != nil {
		return nil, err
	}
	m.child = c
	m.client = mgmtclient.New(c.stdin)
	close(clientReady)
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
			m.client.Fail(errors.New("stdout closed"))
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
	msg, err := mgmtclient.Decode(line)
	if err != nil {
		m.mu.Lock()
		m.badLines++
		m.mu.Unlock()
		return
	}
	switch {
	case msg.ID != nil:
		m.client.Answer(msg)
	case msg.Event == "streamOpened":
		m.streamOpened.Add(1)
	case msg.Event == "streamClosed":
		m.streamClosed.Add(1)
	case msg.Event != "":
		m.mu.Lock()
		m.events[msg.Event]++
		now := time.Now()
		m.lastAt[msg.Event] = now
		if len(m.timed) < keepTimed {
			var d struct {
				Hub string `json:"hub"`
			}
			json.Unmarshal(msg.Data, &d)
			m.timed = append(m.timed, timedEvent{at: now, name: msg.Event, hub: d.Hub})
		}
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

// call sends one request and waits up to timeout for its answer.
func (m *mgmt) call(method string, params any, timeout time.Duration) (json.RawMessage, error) {
	res, err := m.client.Call(method, params, timeout)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.label, err)
	}
	return res, nil
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

// eventAfter waits up to timeout until more than n events of that name
// have arrived, and returns when the last of them did.
func (m *mgmt) eventAfter(name string, n int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		m.mu.Lock()
		c, at := m.events[name], m.lastAt[name]
		m.mu.Unlock()
		if c > n {
			return at, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s: no %s event within %v", m.label, name, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// hubEventAfter waits up to timeout for an event of that name whose "hub"
// is hub and that the bench read at or after since; it returns when.
func (m *mgmt) hubEventAfter(name, hub string, since time.Time, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	seen := 0
	for {
		m.mu.Lock()
		for ; seen < len(m.timed); seen++ {
			e := m.timed[seen]
			if e.name == name && e.hub == hub && !e.at.Before(since) {
				m.mu.Unlock()
				return e.at, nil
			}
		}
		m.mu.Unlock()
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s: no %s event for hub %s within %v", m.label, name, hub, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
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

package systest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/mgmtclient"
	"github.com/serve-zone/remoteingress/internal/testutil"
)

// Engine is one remoteingress-bin --management process, driven like
// @push.rocks/smartrust's RustBridge does: requests on stdin, responses and
// events on stdout, logs on stderr.
type Engine struct {
	t    testing.TB
	Name string
	cmd  *exec.Cmd

	stdin  io.WriteCloser
	client *mgmtclient.Client

	mu       sync.Mutex
	events   []Event
	logs     []LogLine
	notify   chan struct{} // closed and replaced whenever events or logs grow
	badLines []string      // stdout lines that are not protocol lines
	Version  string

	ready    chan struct{}
	exited   chan struct{}
	exitErr  error
	exitCode int
	killed   bool
}

// Event is one {"event":...} line.
type Event struct {
	Name string
	Data json.RawMessage
	At   time.Time
}

// LogLine is one stderr line.
type LogLine struct {
	At   time.Time
	Text string
}

// startEngine starts remoteingress-bin --management (inside the network
// namespace netns when it is not empty) and waits for its ready event. The
// process is killed and reaped on cleanup whatever happens; when the test
// failed its stderr is logged.
func startEngine(t testing.TB, name, netns string) *Engine {
	t.Helper()
	var cmd *exec.Cmd
	if netns == "" {
		cmd = exec.Command(binPath, "--management")
	} else {
		ip := requireTool(t, "ip", "iproute2")
		cmd = exec.Command(ip, "netns", "exec", netns, binPath, "--management")
	}
	return startEngineCmd(t, name, cmd)
}

// startEngineCmd is startEngine for a command that ends up running the
// binary with --management on its stdio (directly or through a parent).
func startEngineCmd(t testing.TB, name string, cmd *exec.Cmd) *Engine {
	t.Helper()
	if cmd.SysProcAttr == nil {
		// Should the test process die without its cleanups (a go test
		// timeout), the process must not outlive it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	e := &Engine{t: t, Name: name, cmd: cmd, notify: make(chan struct{}),
		ready: make(chan struct{}), exited: make(chan struct{})}
	var err error
	if e.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	e.client = mgmtclient.New(e.stdin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: starting %s: %v", name, binPath, err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); e.readStdout(stdout) }()
	go func() { defer readers.Done(); e.readStderr(stderr) }()
	go func() {
		readers.Wait()
		err := cmd.Wait()
		e.mu.Lock()
		e.exitErr = err
		e.exitCode = cmd.ProcessState.ExitCode()
		e.mu.Unlock()
		e.client.Fail(fmt.Errorf("%s exited (%v) before answering", name, cmd.ProcessState))
		close(e.exited)
		e.wake()
	}()
	t.Cleanup(func() {
		e.Kill()
		e.mu.Lock()
		bad := e.badLines
		e.mu.Unlock()
		if len(bad) > 0 {
			t.Errorf("%s wrote %d lines to stdout that are not protocol lines, e.g. %q", name, len(bad), bad[0])
		}
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, e.Pid(), tail(e.Stderr(), 60))
		}
	})
	select {
	case <-e.ready:
	case <-e.exited:
		t.Fatalf("%s exited before its ready event (%v); stderr:\n%s", name, e.exitErr, e.Stderr())
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no ready event within 10 s; stderr:\n%s", name, e.Stderr())
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("%s: ready after %v (the contract asks for 1 s)", name, d.Round(time.Millisecond))
	}
	return e
}

func (e *Engine) wake() {
	e.mu.Lock()
	close(e.notify)
	e.notify = make(chan struct{})
	e.mu.Unlock()
}

func (e *Engine) readStdout(r io.Reader) {
	br := bufio.NewReaderSize(r, 1<<16)
	first := true
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			e.handleLine(line, first)
			first = false
		}
		if err != nil {
			return
		}
	}
}

func (e *Engine) handleLine(line []byte, first bool) {
	msg, err := mgmtclient.Decode(line)
	if err != nil || (msg.Event == "" && (msg.ID == nil || msg.Success == nil)) {
		e.mu.Lock()
		e.badLines = append(e.badLines, string(line))
		e.mu.Unlock()
		return
	}
	if msg.Event != "" {
		if msg.Event == "ready" {
			var d struct {
				Version string `json:"version"`
			}
			_ = json.Unmarshal(msg.Data, &d)
			e.mu.Lock()
			e.Version = d.Version
			e.mu.Unlock()
			if first {
				close(e.ready)
			}
			return
		}
		e.mu.Lock()
		e.events = append(e.events, Event{Name: msg.Event, Data: msg.Data, At: time.Now()})
		e.mu.Unlock()
		e.wake()
		return
	}
	e.client.Answer(msg)
}

func (e *Engine) readStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e.mu.Lock()
		e.logs = append(e.logs, LogLine{At: time.Now(), Text: sc.Text()})
		e.mu.Unlock()
		e.wake()
	}
}

// Pid is the process id of the binary (ip netns exec execs it in place).
func (e *Engine) Pid() int { return e.cmd.Process.Pid }

// Exited is closed when the process has exited and been reaped.
func (e *Engine) Exited() <-chan struct{} { return e.exited }

// Call sends one request and waits for its response (30 s at most).
func (e *Engine) Call(method string, params any) (json.RawMessage, error) {
	res, err := e.client.Call(method, params, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Name, err)
	}
	return res, nil
}

// MustCall calls and decodes the result into out (when not nil).
func (e *Engine) MustCall(t testing.TB, method string, params any, out any) {
	t.Helper()
	res, err := e.Call(method, params)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(res, out); err != nil {
			t.Fatalf("%s: decoding the %s result %s: %v", e.Name, method, res, err)
		}
	}
}

// HubStatus is the result of getHubStatus.
type HubStatus struct {
	Running        bool `json:"running"`
	TunnelPort     int  `json:"tunnelPort"`
	ConnectedEdges []struct {
		EdgeID        string `json:"edgeId"`
		ConnectedAt   int64  `json:"connectedAt"`
		ActiveStreams int    `json:"activeStreams"`
		Connections   int    `json:"connections"`
		RemoteAddr    string `json:"remoteAddr"`
		Transport     string `json:"transport"`
	} `json:"connectedEdges"`
	QUICPort      int    `json:"quicPort"`
	EventsDropped uint64 `json:"eventsDropped"`
	Goroutines    int    `json:"goroutines"`
}

// ActiveStreams sums the streams of every connected edge.
func (s HubStatus) ActiveStreams() int {
	n := 0
	for _, e := range s.ConnectedEdges {
		n += e.ActiveStreams
	}
	return n
}

// EdgeStatus is the result of getEdgeStatus.
type EdgeStatus struct {
	Running           bool    `json:"running"`
	Connected         bool    `json:"connected"`
	PublicIP          *string `json:"publicIp"`
	ActiveStreams     int     `json:"activeStreams"`
	ListenPorts       []int   `json:"listenPorts"`
	LastError         string  `json:"lastError"`
	Transport         *string `json:"transport"`
	ReconnectAttempts int     `json:"reconnectAttempts"`
	EventsDropped     uint64  `json:"eventsDropped"`
	Goroutines        int     `json:"goroutines"`
}

func (e *Engine) HubStatus(t testing.TB) HubStatus {
	t.Helper()
	var st HubStatus
	e.MustCall(t, "getHubStatus", nil, &st)
	return st
}

func (e *Engine) EdgeStatus(t testing.TB) EdgeStatus {
	t.Helper()
	var st EdgeStatus
	e.MustCall(t, "getEdgeStatus", nil, &st)
	return st
}

// StartHub allows the given edges (id, secret pairs) and starts the hub;
// it returns the bound tunnel port.
func (e *Engine) StartHub(t testing.TB, params map[string]any, edges ...[2]string) int {
	t.Helper()
	list := make([]map[string]string, 0, len(edges))
	for _, ed := range edges {
		list = append(list, map[string]string{"id": ed[0], "secret": ed[1]})
	}
	e.MustCall(t, "updateAllowedEdges", map[string]any{"edges": list}, nil)
	var res struct {
		Started    bool `json:"started"`
		TunnelPort int  `json:"tunnelPort"`
	}
	e.MustCall(t, "startHub", params, &res)
	if !res.Started || res.TunnelPort == 0 {
		t.Fatalf("%s: startHub answered %+v", e.Name, res)
	}
	return res.TunnelPort
}

// StartEdge starts the edge with params; STUN is off unless params say otherwise.
func (e *Engine) StartEdge(t testing.TB, params map[string]any) {
	t.Helper()
	if _, ok := params["stunIntervalSecs"]; !ok {
		params["stunIntervalSecs"] = 0
	}
	e.MustCall(t, "startEdge", params, nil)
}

// Mark is the number of events received so far; pass it to WaitEvent to
// wait for a later one.
func (e *Engine) Mark() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.events)
}

// Events returns the events from index from on.
func (e *Engine) Events(from int) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	if from > len(e.events) {
		return nil
	}
	return append([]Event(nil), e.events[from:]...)
}

// WaitEvent waits for the first event named name at index >= from for which
// match (if not nil) holds, and returns it with its index.
func (e *Engine) WaitEvent(name string, from int, timeout time.Duration, match func(Event) bool) (Event, int, error) {
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		for i := from; i < len(e.events); i++ {
			ev := e.events[i]
			if ev.Name == name && (match == nil || match(ev)) {
				e.mu.Unlock()
				return ev, i, nil
			}
		}
		from = max(from, len(e.events))
		ch := e.notify
		e.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return Event{}, -1, fmt.Errorf("%s: no %q event within %v", e.Name, name, timeout)
		}
	}
}

// MustWaitEvent is WaitEvent that fails the test.
func (e *Engine) MustWaitEvent(t testing.TB, name string, from int, timeout time.Duration) Event {
	t.Helper()
	ev, _, err := e.WaitEvent(name, from, timeout, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// LogMark is the number of stderr lines so far.
func (e *Engine) LogMark() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.logs)
}

// WaitLog waits for a stderr line at index >= from that contains every one
// of the given substrings.
func (e *Engine) WaitLog(from int, timeout time.Duration, substrs ...string) (LogLine, error) {
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
	lines:
		for i := from; i < len(e.logs); i++ {
			for _, s := range substrs {
				if !strings.Contains(e.logs[i].Text, s) {
					continue lines
				}
			}
			l := e.logs[i]
			e.mu.Unlock()
			return l, nil
		}
		from = max(from, len(e.logs))
		ch := e.notify
		e.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return LogLine{}, fmt.Errorf("%s: no stderr line with %q within %v", e.Name, substrs, timeout)
		}
	}
}

// Stderr is everything the process wrote to stderr so far.
func (e *Engine) Stderr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, l := range e.logs {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// Kill sends SIGKILL (if the process still runs) and waits until it is reaped.
func (e *Engine) Kill() {
	select {
	case <-e.exited:
		return
	default:
	}
	e.mu.Lock()
	e.killed = true
	e.mu.Unlock()
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
}

// Stop closes stdin, as a dying parent would, and waits up to 5 s for a
// clean exit; it returns the exit code, or an error (after a SIGKILL) when
// the process did not exit in time.
func (e *Engine) Stop() (int, error) {
	_ = e.stdin.Close()
	select {
	case <-e.exited:
		return e.exitCode, nil
	case <-time.After(5 * time.Second):
		e.Kill()
		return -1, errors.New(e.Name + " did not exit within 5 s of stdin closing")
	}
}

// FDs is the number of open file descriptors of the process.
func (e *Engine) FDs(t testing.TB) int {
	t.Helper()
	n, err := procFDs(e.Pid())
	if err != nil {
		t.Fatalf("%s: %v", e.Name, err)
	}
	return n
}

// RSS is the resident set size of the process in bytes.
func (e *Engine) RSS(t testing.TB) int64 {
	t.Helper()
	n, err := procRSS(e.Pid())
	if err != nil {
		t.Fatalf("%s: %v", e.Name, err)
	}
	return n
}

// WaitIdle waits until the hub (isHub) or edge reports no active streams and
// the process has at most wantFDs descriptors open (wantFDs < 0: any). It
// fails the test with the details otherwise.
func (e *Engine) WaitIdle(t testing.TB, isHub bool, wantFDs int, timeout time.Duration) (streams, fds int) {
	t.Helper()
	ok := testutil.Poll(timeout, func() bool {
		if isHub {
			streams = e.HubStatus(t).ActiveStreams()
		} else {
			streams = e.EdgeStatus(t).ActiveStreams
		}
		fds, _ = procFDs(e.Pid())
		return streams == 0 && (wantFDs < 0 || fds <= wantFDs)
	})
	if !ok {
		t.Errorf("%s did not return to idle within %v: activeStreams %d (want 0), fds %d (baseline %d): %s",
			e.Name, timeout, streams, fds, wantFDs, procFDList(e.Pid()))
	}
	return streams, fds
}

// settledFDs waits until the fd count of a process has not changed for a
// second and returns it (the baseline before a measurement).
func (e *Engine) settledFDs(t testing.TB) int {
	t.Helper()
	last, stable := -1, 0
	for i := 0; i < 100; i++ {
		n := e.FDs(t)
		if n == last {
			stable++
			if stable >= 5 {
				return n
			}
		} else {
			last, stable = n, 0
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

// eventString decodes an event's data field name as a string.
func eventString(ev Event, field string) string {
	var m map[string]any
	_ = json.Unmarshal(ev.Data, &m)
	s, _ := m[field].(string)
	return s
}

// goroutines is the engine's goroutine count from its status.
func (e *Engine) goroutines(t testing.TB, isHub bool) int {
	t.Helper()
	if isHub {
		return e.HubStatus(t).Goroutines
	}
	return e.EdgeStatus(t).Goroutines
}

// WaitGoroutines waits until the engine has at most want goroutines and
// returns the last count seen.
func (e *Engine) WaitGoroutines(t testing.TB, isHub bool, want int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := e.goroutines(t, isHub)
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

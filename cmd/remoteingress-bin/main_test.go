package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// testVersion is stamped into the binary under test.
const testVersion = "9.9.9-test"

// binary is the path of the binary built by TestMain.
var binary string

// waitLimit bounds every wait; reaching it is a failure.
const waitLimit = 20 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "remoteingress-bin-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "remoteingress-bin")
	args := []string{"build", "-ldflags", "-X main.version=" + testVersion, "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	if raceEnabled {
		// The race runtime sleeps 1 s at exit by default; keep exits fast.
		os.Setenv("GORACE", "atexit_sleep_ms=50")
	}
	build := exec.Command(goTool, append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goTool is the go command that runs the tests: go test puts the bin
// directory of its own GOROOT first on the test binary's PATH.
const goTool = "go"

// lineLog collects the complete lines written to it.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// line waits for line i (0-based).
func (l *lineLog) line(t *testing.T, i int) string {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		l.mu.Lock()
		if i < len(l.lines) {
			s := l.lines[i]
			l.mu.Unlock()
			return s
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no output line %d within %s", i, waitLimit)
		}
	}
}

// all returns every complete line and what follows the last newline.
func (l *lineLog) all() ([]string, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...), string(l.partial)
}

// proc is a running remoteingress-bin.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  *lineLog
	stderr  *testutil.SyncBuffer
	started time.Time
	exited  chan struct{}
	err     error // of Wait, once exited is closed
	read    int   // stdout lines consumed
	stash   []string
}

// startProc starts the binary with args; it is killed at the end of the test if still running.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(binary, args...), stdout: newLineLog(), stderr: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(waitLimit):
			t.Errorf("the process did not exit; killing it")
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("stderr of the process:\n%s", p.stderr.String())
		}
	})
	return p
}

// send writes one line to the process.
func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("writing to the process: %v", err)
	}
}

// next returns the next stdout line, decoded.
func (p *proc) next() map[string]any {
	p.t.Helper()
	var l string
	if len(p.stash) > 0 {
		l, p.stash = p.stash[0], p.stash[1:]
	} else {
		l = p.stdout.line(p.t, p.read)
		p.read++
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(l), &m); err != nil {
		p.t.Fatalf("stdout line is not JSON: %q", truncate(l))
	}
	return m
}

// waitFor returns the first stdout line matching match; others stay for next.
func (p *proc) waitFor(match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	decode := func(l string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			p.t.Fatalf("stdout line is not JSON: %q", truncate(l))
		}
		return m
	}
	for i, l := range p.stash {
		if m := decode(l); match(m) {
			p.stash = append(p.stash[:i:i], p.stash[i+1:]...)
			return m
		}
	}
	for {
		l := p.stdout.line(p.t, p.read)
		p.read++
		if m := decode(l); match(m) {
			return m
		}
		p.stash = append(p.stash, l)
	}
}

// answer waits for the answer with the given id.
func (p *proc) answer(id any) map[string]any {
	p.t.Helper()
	want, _ := json.Marshal(id)
	return p.waitFor(func(m map[string]any) bool {
		got, _ := json.Marshal(m["id"])
		_, isEvent := m["event"]
		_, isNotif := m["method"]
		return !isEvent && !isNotif && string(got) == string(want)
	})
}

// waitExit waits for the process to exit within limit and returns its code.
func (p *proc) waitExit(limit time.Duration) int {
	p.t.Helper()
	return waitExited(p.t, "the process", p.exited, &p.err, limit)
}

// waitExited waits for exited to close within limit, then returns the exit
// code that *err (the result of Wait) holds.
func waitExited(t *testing.T, name string, exited <-chan struct{}, err *error, limit time.Duration) int {
	t.Helper()
	select {
	case <-exited:
	case <-time.After(limit):
		t.Fatalf("%s did not exit within %s", name, limit)
	}
	var ee *exec.ExitError
	if errors.As(*err, &ee) {
		return ee.ExitCode()
	}
	if *err != nil {
		t.Fatalf("wait: %v", *err)
	}
	return 0
}

// checkStdoutIsJSONLines checks that everything on stdout is a complete JSON object per line.
func (p *proc) checkStdoutIsJSONLines() {
	p.t.Helper()
	lines, rest := p.stdout.all()
	if rest != "" {
		p.t.Errorf("stdout ends without a newline: %q", truncate(rest))
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			p.t.Errorf("stdout line is not a JSON object: %q", truncate(l))
		}
	}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// runBinary runs the binary to completion.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestVersion(t *testing.T) {
	out, _, code := runBinary(t, "--version")
	if code != 0 || out != testVersion+"\n" {
		t.Fatalf("--version: code %d, stdout %q", code, out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--bogus"},
		{"extra"},
		{"--management", "extra"},
		{"--management", "--jsonrpc"},
		{"--version", "--management"},
	} {
		out, errOut, code := runBinary(t, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "usage: remoteingress-bin") {
			t.Errorf("%q: code %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}

// expectReady checks that the first line is the ready event, written within 1 s.
func expectReady(t *testing.T, p *proc, jsonrpc bool) {
	t.Helper()
	m := p.next()
	if took := time.Since(p.started); took > time.Second {
		t.Errorf("the ready event came after %s", took)
	}
	var want map[string]any
	if jsonrpc {
		want = map[string]any{"jsonrpc": "2.0", "method": "ready", "params": map[string]any{"version": testVersion}}
	} else {
		want = map[string]any{"event": "ready", "data": map[string]any{"version": testVersion}}
	}
	if g, w := fmt.Sprint(m), fmt.Sprint(want); g != w {
		t.Fatalf("first line %v, want %v", g, w)
	}
}

// expectOK checks a management success answer and returns its result.
func expectOK(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	if m["success"] != true {
		t.Fatalf("answer %v", m)
	}
	r, _ := m["result"].(map[string]any)
	return r
}

// expectFailure checks a management failure answer and returns its message.
func expectFailure(t *testing.T, m map[string]any) string {
	t.Helper()
	msg, _ := m["error"].(string)
	if m["success"] != false || msg == "" {
		t.Fatalf("answer %v", m)
	}
	return msg
}

func TestManagementSession(t *testing.T) {
	p := startProc(t, "--management")
	expectReady(t, p, false)

	p.send(`{"id":"req_1","method":"ping","params":{}}`)
	if r := expectOK(t, p.answer("req_1")); r["pong"] != true {
		t.Fatalf("ping result %v", r)
	}
	p.send(`this is not json`)
	p.send(`{"id":"req_2","params":{}}`)
	if msg := expectFailure(t, p.next()); !strings.Contains(msg, "no method") {
		t.Fatalf("line without method: %q", msg)
	}
	p.send(`{"id":"req_3","method":"teleport","params":{}}`)
	if msg := expectFailure(t, p.answer("req_3")); !strings.Contains(msg, `"teleport"`) {
		t.Fatalf("unknown method: %q", msg)
	}
	p.send(`{"id":"req_4","method":"ping","params":{"blob":"` + strings.Repeat("x", 10<<20) + `"}}`)
	if r := expectOK(t, p.answer("req_4")); r["pong"] != true {
		t.Fatalf("10 MiB ping result %v", r)
	}
	p.send(`{"id":"req_5","method":"getEdgeStatus"}`)
	st := expectOK(t, p.answer("req_5"))
	if st["running"] != false || st["publicIp"] != nil || fmt.Sprint(st["listenPorts"]) != "[]" {
		t.Fatalf("getEdgeStatus %v", st)
	}

	p.stdin.Close()
	if code := p.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	p.checkStdoutIsJSONLines()
	if lines, _ := p.stdout.all(); len(lines) != 6 { // ready + five answers
		t.Fatalf("%d stdout lines, want 6", len(lines))
	}
	if !strings.Contains(p.stderr.String(), "rejected input line") {
		t.Errorf("the garbage line was not logged:\n%s", p.stderr.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		if len(l) > 1000 {
			t.Errorf("overlong log line: %q", truncate(l))
		}
	}
}

func TestJSONRPCSession(t *testing.T) {
	p := startProc(t, "--jsonrpc")
	expectReady(t, p, true)

	p.send(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	if m := p.answer(1); fmt.Sprint(m["result"]) != "map[pong:true]" || m["jsonrpc"] != "2.0" {
		t.Fatalf("ping: %v", m)
	}
	code := func(m map[string]any) float64 {
		e, _ := m["error"].(map[string]any)
		c, _ := e["code"].(float64)
		return c
	}
	p.send(`garbage`)
	if m := p.next(); code(m) != -32700 || m["id"] != nil {
		t.Fatalf("garbage: %v", m)
	}
	p.send(`{"jsonrpc":"2.0","id":2,"method":"teleport"}`)
	if m := p.answer(2); code(m) != -32601 || !strings.Contains(fmt.Sprint(m["error"]), "teleport") {
		t.Fatalf("unknown method: %v", m)
	}
	p.send(`{"jsonrpc":"2.0","id":3,"method":"startEdge","params":{"hubHost":"127.0.0.1"}}`)
	if m := p.answer(3); code(m) != -32602 {
		t.Fatalf("invalid params: %v", m)
	}
	p.send(`{"jsonrpc":"2.0","id":4,"method":"ping","params":{"blob":"` + strings.Repeat("y", 10<<20) + `"}}`)
	if m := p.answer(4); fmt.Sprint(m["result"]) != "map[pong:true]" {
		t.Fatalf("10 MiB ping: %v", m)
	}
	p.stdin.Close()
	if c := p.waitExit(5 * time.Second); c != 0 {
		t.Fatalf("exit code %d", c)
	}
	p.checkStdoutIsJSONLines()
}

func TestOneShotFromAPipe(t *testing.T) {
	cmd := exec.Command(binary, "--jsonrpc")
	cmd.Stdin = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[1] != `{"id":1,"result":{"pong":true},"jsonrpc":"2.0"}` {
		t.Fatalf("stdout %q", out)
	}
}

// startHubAndEdge starts a real hub and an edge on 127.0.0.1 in p, or skips
// while the engine is a stub.
func startHubAndEdge(t *testing.T, p *proc, secret string) {
	t.Helper()
	p.send(`{"id":"h","method":"startHub","params":{"tunnelPort":0,"listenHost":"127.0.0.1"}}`)
	m := p.answer("h")
	if m["error"] == "not implemented yet" {
		t.Skip("the engine is not implemented yet")
	}
	port := expectOK(t, m)["tunnelPort"]
	p.send(fmt.Sprintf(`{"id":"e","method":"startEdge","params":{"hubHost":"127.0.0.1","hubPort":%v,"edgeId":"edge-1","secret":%q,"listenPorts":[%d],"listenHost":"127.0.0.1","stunIntervalSecs":0}}`,
		port, secret, testutil.FreePort(t)))
	expectOK(t, p.answer("e"))
}

func TestStdinClosedStopsEverything(t *testing.T) {
	p := startProc(t, "--management")
	expectReady(t, p, false)
	startHubAndEdge(t, p, "stdin-secret")
	start := time.Now()
	p.stdin.Close()
	if code := p.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("exited %s after stdin closed", time.Since(start))
	p.checkStdoutIsJSONLines()
}

func TestSignalsStopEverything(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProc(t, "--management")
			expectReady(t, p, false)
			startHubAndEdge(t, p, "signal-secret")
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := p.waitExit(5 * time.Second); code != 0 {
				t.Fatalf("exit code %d after %s", code, sig)
			}
			p.checkStdoutIsJSONLines()
		})
	}
}

func TestSIGTERMWithPipesGone(t *testing.T) {
	// RustBridge destroys the pipes right after SIGTERM: the process must
	// still exit 0, not die of SIGPIPE.
	cmd := exec.Command(binary, "--management")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	buf := make([]byte, 4096)
	if _, err := stdout.Read(buf); err != nil { // the ready line
		t.Fatal(err)
	}
	// Close the output pipes first: every log line of the shutdown meets EPIPE.
	stdout.Close()
	stderr.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit: %v", waitErr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit within 5 s")
	}
	stdin.Close()
}

func TestSecretNeverWritten(t *testing.T) {
	const secret = "NEVER-PRINT-THIS-8d1f0c"
	p := startProc(t, "--management")
	expectReady(t, p, false)

	// The hub's allow list and an invalid request carry the secret.
	p.send(`{"id":"u","method":"updateAllowedEdges","params":{"edges":[{"id":"edge-1","secret":"` + secret + `"}]}}`)
	expectOK(t, p.answer("u"))
	p.send(`{"id":"bad","method":"startEdge","params":{"hubHost":"127.0.0.1","edgeId":"edge-1","secret":"` + secret + `","listenPorts":["x"]}}`)
	expectFailure(t, p.answer("bad"))
	p.send(`{"id":"broken","method":"startEdge","params":{"secret":"` + secret + `",`)
	expectFailure(t, p.answer("broken"))

	// A real edge against a closed port keeps failing to connect.
	hub := testutil.FreePort(t) // closed again: nothing listens there
	p.send(fmt.Sprintf(`{"id":"e","method":"startEdge","params":{"hubHost":"127.0.0.1","hubPort":%d,"edgeId":"edge-1","secret":%q,"listenPorts":[%d],"listenHost":"127.0.0.1","stunIntervalSecs":0}}`,
		hub, secret, testutil.FreePort(t)))
	m := p.answer("e")
	if m["error"] == "not implemented yet" {
		t.Skip("the engine is not implemented yet")
	}
	expectOK(t, m)
	ev := p.waitFor(func(m map[string]any) bool { return m["event"] == "tunnelDisconnected" })
	if reason := fmt.Sprint(ev["data"]); !strings.Contains(reason, fmt.Sprint(hub)) {
		t.Errorf("tunnelDisconnected does not name the hub address: %v", ev)
	}
	p.send(`{"id":"s","method":"getEdgeStatus"}`)
	if st := expectOK(t, p.answer("s")); st["running"] != true || st["connected"] != false {
		t.Fatalf("getEdgeStatus %v", st)
	}
	p.send(`{"id":"x","method":"stopEdge"}`)
	expectOK(t, p.answer("x"))
	p.stdin.Close()
	if code := p.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	lines, rest := p.stdout.all()
	if out := strings.Join(lines, "\n") + rest; strings.Contains(out, secret) {
		t.Fatalf("the secret is on stdout:\n%s", out)
	}
	if errOut := p.stderr.String(); strings.Contains(errOut, secret) {
		t.Fatalf("the secret is on stderr:\n%s", errOut)
	}
}

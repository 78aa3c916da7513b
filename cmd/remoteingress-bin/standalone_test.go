package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/internal/token"
)

// The binary in standalone mode, as a user runs it: config files on disk,
// signals, the logs on stderr. Everything on 127.0.0.0/8.

const (
	testSecret  = "standalone-test-secret-8f2c41d9e7"
	otherSecret = "standalone-other-secret-a1b2c3d4e5"
)

// sproc is a standalone remoteingress-bin.
type sproc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stderr *lineLog
	seen   int // stderr lines already searched by waitLog
	exited chan struct{}
	err    error
}

// startStandalone starts the binary with args; it is killed at the end of
// the test if it still runs.
func startStandalone(t *testing.T, name string, env []string, args ...string) *sproc {
	t.Helper()
	p := &sproc{t: t, name: name, cmd: exec.Command(binary, args...), stderr: newLineLog(), exited: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	p.cmd.Env = append(os.Environ(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			lines, rest := p.stderr.all()
			t.Logf("stderr of %s:\n%s\n%s", p.name, strings.Join(lines, "\n"), rest)
		}
	})
	return p
}

// waitLog waits for a stderr line after the last one found that contains
// every part, and returns it.
func (p *sproc) waitLog(limit time.Duration, parts ...string) string {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		lines, _ := p.stderr.all()
		for i := p.seen; i < len(lines); i++ {
			if containsAll(lines[i], parts) {
				p.seen = i + 1
				return lines[i]
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no log line with %q within %s", p.name, parts, limit)
		}
		select {
		case <-p.exited:
			lines, _ := p.stderr.all()
			for i := p.seen; i < len(lines); i++ {
				if containsAll(lines[i], parts) {
					p.seen = i + 1
					return lines[i]
				}
			}
			p.t.Fatalf("%s exited (%v) without a log line with %q", p.name, p.err, parts)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hasLog reports whether any stderr line after the last one found has every part.
func (p *sproc) hasLog(parts ...string) bool {
	lines, _ := p.stderr.all()
	for _, l := range lines[min(p.seen, len(lines)):] {
		if containsAll(l, parts) {
			return true
		}
	}
	return false
}

func containsAll(s string, parts []string) bool {
	for _, part := range parts {
		if !strings.Contains(s, part) {
			return false
		}
	}
	return true
}

func (p *sproc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// waitExit waits for the process to exit within limit and returns its code.
func (p *sproc) waitExit(limit time.Duration) int {
	p.t.Helper()
	return waitExited(p.t, p.name, p.exited, &p.err, limit)
}

// allLogs returns everything the process wrote to stderr.
func (p *sproc) allLogs() string {
	lines, rest := p.stderr.all()
	return strings.Join(lines, "\n") + rest
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// holdTarget is a target on 127.0.0.2 that reads the PROXY header, then
// echoes until the client half-closes.
type holdTarget struct {
	ln      net.Listener
	port    int
	mu      sync.Mutex
	headers []string
	wg      sync.WaitGroup
}

func startHoldTarget(t *testing.T, port int) *holdTarget {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("target: %v", err)
	}
	tg := &holdTarget{ln: ln, port: port}
	tg.wg.Add(1)
	go func() {
		defer tg.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.wg.Add(1)
			go func() {
				defer tg.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				tg.mu.Lock()
				tg.headers = append(tg.headers, line)
				tg.mu.Unlock()
				io.Copy(c, br)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		tg.wg.Wait()
	})
	return tg
}

func (tg *holdTarget) seen() []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]string(nil), tg.headers...)
}

// standaloneRig is a hub and an edge run from config files, with a target.
type standaloneRig struct {
	dir        string
	hub, edge  *sproc
	hubConfig  string
	edgeConfig string
	tunnelPort int
	edgePort   int
	target     *holdTarget
	edgeAddr   string
	// hubMetrics and edgeMetrics are the metricsListen addresses (rigConfig.metrics).
	hubMetrics, edgeMetrics string
}

type rigConfig struct {
	// hubAllowed is the hub config's allowed list part (default: an
	// allowedEdgesFile "allowed.yaml" allowing edge-1 with its secret file).
	hubAllowed string
	// allowedFile is the allowedEdgesFile's path to write (relative to dir), "" for none.
	allowedFile  string
	hubGrace     int
	edgeGrace    int
	skipConnWait bool
	// metrics adds metricsListen: 127.0.0.1:0 to both configs; the bound
	// addresses are the rig's hubMetrics and edgeMetrics.
	metrics bool
}

const allowEdge1 = `- id: edge-1
  secretFile: edge-1.secret
`

func startStandaloneRig(t *testing.T, rc rigConfig) *standaloneRig {
	t.Helper()
	r := &standaloneRig{dir: t.TempDir()}
	writeFile(t, filepath.Join(r.dir, "edge-1.secret"), testSecret+"\n")
	metricsKey := ""
	if rc.metrics {
		metricsKey = "metricsListen: 127.0.0.1:0\n"
	}
	if rc.hubAllowed == "" {
		rc.hubAllowed = "allowedEdgesFile: allowed.yaml\n"
		rc.allowedFile = "allowed.yaml"
	}
	if rc.allowedFile != "" {
		writeFile(t, filepath.Join(r.dir, rc.allowedFile), allowEdge1)
	}
	r.hubConfig = writeFile(t, filepath.Join(r.dir, "hub.yaml"), fmt.Sprintf(`# hub of the standalone tests
tunnelPort: 0
listenHost: 127.0.0.1
targetHost: 127.0.0.2
%s%sgracePeriodSecs: %d
logLevel: debug
`, rc.hubAllowed, metricsKey, rc.hubGrace))
	r.hub = startStandalone(t, "hub", nil, "hub", "--config", r.hubConfig)
	if rc.metrics {
		r.hubMetrics = metricsAddress(t, r.hub)
	}
	line := r.hub.waitLog(waitLimit, "hub listening")
	m := regexp.MustCompile(`tunnelPort=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no tunnel port in %q", line)
	}
	r.tunnelPort, _ = strconv.Atoi(m[1])
	r.hub.waitLog(waitLimit, "hub ready")

	r.edgePort = testutil.FreePort(t, "127.0.0.1", "127.0.0.2")
	r.target = startHoldTarget(t, r.edgePort)
	r.edgeAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.edgePort))
	r.edgeConfig = writeFile(t, filepath.Join(r.dir, "edge.yaml"), fmt.Sprintf(`hubHost: 127.0.0.1
hubPort: %d
edgeId: edge-1
secretFile: edge-1.secret
listenHost: 127.0.0.1
listenPorts: [%d]
stunIntervalSecs: 0
%sgracePeriodSecs: %d
`, r.tunnelPort, r.edgePort, metricsKey, rc.edgeGrace))
	r.edge = startStandalone(t, "edge", nil, "edge", "--config", r.edgeConfig)
	if rc.metrics {
		r.edgeMetrics = metricsAddress(t, r.edge)
	}
	r.edge.waitLog(waitLimit, "edge ready")
	if !rc.skipConnWait {
		r.edge.waitLog(waitLimit, "tunnel connected")
		r.hub.waitLog(waitLimit, "edge connected", "edgeId=edge-1")
	}
	return r
}

// dial connects a client to the edge.
func (r *standaloneRig) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", r.edgeAddr)
	if err != nil {
		t.Fatalf("dial edge: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip sends msg through the tunnel and reads the echo.
func (r *standaloneRig) roundTrip(t *testing.T) {
	t.Helper()
	c := r.dial(t)
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

// openStream opens a client connection whose stream stays open until finish.
func (r *standaloneRig) openStream(t *testing.T) (finish func()) {
	t.Helper()
	c := r.dial(t)
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := c.Write([]byte("first ")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("the stream does not flow: %v", err)
	}
	return func() {
		t.Helper()
		if _, err := c.Write([]byte("second")); err != nil {
			t.Fatalf("the open stream was cut: %v", err)
		}
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "second" {
			t.Fatalf("the open stream's end = %q, %v; want \"second\"", got, err)
		}
	}
}

// stopBoth stops the rig and checks both exit 0.
func (r *standaloneRig) stopBoth(t *testing.T) {
	t.Helper()
	r.edge.signal(syscall.SIGTERM)
	r.hub.signal(syscall.SIGTERM)
	if code := r.edge.waitExit(waitLimit); code != 0 {
		t.Errorf("edge exit code %d", code)
	}
	if code := r.hub.waitExit(waitLimit); code != 0 {
		t.Errorf("hub exit code %d", code)
	}
}

// The hub and the edge from config files carry a connection to the target,
// with the PROXY header first; no secret in their logs or command lines.
func TestStandaloneTrafficWithProxyHeader(t *testing.T) {
	r := startStandaloneRig(t, rigConfig{})
	c := r.dial(t)
	c.SetDeadline(time.Now().Add(waitLimit))
	c.Write([]byte("hello standalone"))
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello standalone" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	la := c.LocalAddr().(*net.TCPAddr)
	want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", la.Port, r.edgePort)
	if hs := r.target.seen(); len(hs) != 1 || hs[0] != want {
		t.Fatalf("target saw %q, want [%q]", hs, want)
	}
	for _, p := range []*sproc{r.hub, r.edge} {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.cmd.Process.Pid))
		if err != nil {
			t.Fatalf("reading the command line of %s: %v", p.name, err)
		}
		if strings.Contains(string(cmdline), testSecret) {
			t.Errorf("the secret is in the command line of %s", p.name)
		}
	}
	r.stopBoth(t)
	for _, p := range []*sproc{r.hub, r.edge} {
		if strings.Contains(p.allLogs(), testSecret) {
			t.Errorf("the secret is in the logs of %s", p.name)
		}
	}
}

// SIGHUP with an invalid file keeps the running list (logged); with a list
// that drops the edge, the edge is disconnected at once.
func TestStandaloneSIGHUPReload(t *testing.T) {
	r := startStandaloneRig(t, rigConfig{hubAllowed: "allowedEdges:\n  - id: edge-1\n    secretFile: edge-1.secret\n"})
	base := func(allowed string) string {
		return "tunnelPort: 0\nlistenHost: 127.0.0.1\ntargetHost: 127.0.0.2\nlogLevel: debug\n" + allowed
	}
	writeFile(t, r.hubConfig, base("allowedEdges:\n  - id: edge-1\n    secret: \"\"\n"))
	r.hub.signal(syscall.SIGHUP)
	line := r.hub.waitLog(waitLimit, "reload failed")
	if !strings.Contains(line, "allowedEdges[0].secret must not be empty") || !strings.Contains(line, "hub.yaml:7") {
		t.Errorf("reload failure %q does not name the key and its line", line)
	}
	r.roundTrip(t) // the old list stays: the edge is still in
	if r.hub.hasLog("disconnecting edge") {
		t.Fatal("an invalid reload disconnected the edge")
	}

	writeFile(t, r.hubConfig, base("allowedEdges:\n  - id: edge-2\n    secret: "+otherSecret+"\n"))
	start := time.Now()
	r.hub.signal(syscall.SIGHUP)
	r.hub.waitLog(waitLimit, "disconnecting edge", "edgeId=edge-1", "no longer allowed")
	r.edge.waitLog(waitLimit, "tunnel disconnected")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("revocation took %s", d)
	}
	r.hub.waitLog(waitLimit, "config reloaded")
	// tunnelPort 0 vs the bound port: not a change; a restart-only key is reported.
	writeFile(t, r.hubConfig, strings.Replace(base("allowedEdges: []\n"), "targetHost: 127.0.0.2", "targetHost: 127.0.0.3", 1))
	r.hub.signal(syscall.SIGHUP)
	r.hub.waitLog(waitLimit, "takes effect at the next restart", "key=targetHost")
	r.stopBoth(t)
	if strings.Contains(r.hub.allLogs(), otherSecret) || strings.Contains(r.hub.allLogs(), testSecret) {
		t.Error("a secret is in the hub's logs")
	}
}

// The allowedEdgesFile in a Kubernetes Secret volume: the file is a
// symlink through ..data, which is swapped to a new directory. The hub
// notices within 5 s; an invalid new version is logged and changes nothing.
func TestStandaloneAllowedEdgesFileSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "volume")
	// Like the kubelet: ..<timestamp>/ holds the files, ..data points at it,
	// and each file is a symlink ..data/<name>.
	version := func(name, allowed string) {
		writeFile(t, filepath.Join(vol, name, "allowed.yaml"), allowed)
		writeFile(t, filepath.Join(vol, name, "edge-1.secret"), testSecret)
	}
	swap := func(name string) {
		tmp := filepath.Join(vol, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_00_00_00.1", "- id: edge-1\n  secretFile: edge-1.secret\n")
	swap("..2026_01_01_00_00_00.1")
	for _, name := range []string{"allowed.yaml", "edge-1.secret"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(vol, name)); err != nil {
			t.Fatal(err)
		}
	}
	r := startStandaloneRig(t, rigConfig{hubAllowed: "allowedEdgesFile: " + filepath.Join(vol, "allowed.yaml") + "\n"})
	if !strings.Contains(r.hub.allLogs(), "watching allowedEdgesFile") {
		t.Fatal("the hub does not say it watches allowedEdgesFile")
	}

	version("..2026_01_01_00_00_00.2", "- id: edge-1\n  secretFile: [not, a, string]\n")
	swap("..2026_01_01_00_00_00.2")
	line := r.hub.waitLog(5*time.Second, "allowedEdgesFile changed but is not valid")
	if !strings.Contains(line, "allowed.yaml:2") || !strings.Contains(line, "[0].secretFile") {
		t.Errorf("the error %q does not name the key and its line", line)
	}
	r.roundTrip(t)

	version("..2026_01_01_00_00_00.3", "- id: edge-2\n  secretFile: edge-1.secret\n")
	start := time.Now()
	swap("..2026_01_01_00_00_00.3")
	os.RemoveAll(filepath.Join(vol, "..2026_01_01_00_00_00.1"))
	r.hub.waitLog(5*time.Second, "disconnecting edge", "edgeId=edge-1")
	t.Logf("the swap was noticed after %s", time.Since(start).Round(time.Millisecond))
	r.hub.waitLog(waitLimit, "allowed edges updated", "count=1")
	r.stopBoth(t)
}

// SIGTERM to the edge with a stream open: the listener closes at once (a
// new connection is refused), the open stream finishes, the edge exits 0.
func TestStandaloneEdgeDrainsOnSIGTERM(t *testing.T) {
	r := startStandaloneRig(t, rigConfig{edgeGrace: 30})
	finish := r.openStream(t)
	start := time.Now()
	r.edge.signal(syscall.SIGTERM)
	r.edge.waitLog(waitLimit, "edge draining", "activeStreams=1")
	if c, err := net.DialTimeout("tcp", r.edgeAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted while draining")
	}
	select {
	case <-r.edge.exited:
		t.Fatal("the edge exited with a stream open")
	case <-time.After(200 * time.Millisecond):
	}
	finish()
	if code := r.edge.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the drain took %s", d)
	}
	r.hub.signal(syscall.SIGTERM)
	if code := r.hub.waitExit(waitLimit); code != 0 {
		t.Fatalf("hub exit code %d", code)
	}
}

// SIGTERM to the hub with a stream open: the tunnel port closes, a new
// stream is refused (its client is closed with nothing), the open stream
// finishes, the hub exits 0.
func TestStandaloneHubDrainsOnSIGTERM(t *testing.T) {
	r := startStandaloneRig(t, rigConfig{hubGrace: 30})
	finish := r.openStream(t)
	r.hub.signal(syscall.SIGTERM)
	r.hub.waitLog(waitLimit, "hub draining", "activeStreams=1")
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.tunnelPort)), time.Second); err == nil {
		c.Close()
		t.Fatal("the tunnel port accepted while draining")
	}
	// The edge resets the refused client; on loopback the reset can arrive
	// before connect() returns.
	if n, err := net.Dial("tcp", r.edgeAddr); err == nil {
		defer n.Close()
		n.SetDeadline(time.Now().Add(waitLimit))
		n.Write([]byte("late"))
		n.(*net.TCPConn).CloseWrite()
		if got, _ := io.ReadAll(n); len(got) != 0 {
			t.Fatalf("a connection opened while the hub drains got %q", got)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial edge: %v", err)
	}
	finish()
	if code := r.hub.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if n := len(r.target.seen()); n != 1 {
		t.Errorf("the target saw %d connections, want 1", n)
	}
	r.edge.signal(syscall.SIGINT)
	if code := r.edge.waitExit(waitLimit); code != 0 {
		t.Fatalf("edge exit code %d", code)
	}
}

// A second signal during the drain stops at once; the grace period cuts
// streams when it ends.
func TestStandaloneSecondSignalAndGraceEnd(t *testing.T) {
	r := startStandaloneRig(t, rigConfig{edgeGrace: 60, hubGrace: 1})
	r.openStream(t)
	r.edge.signal(syscall.SIGTERM)
	r.edge.waitLog(waitLimit, "edge draining")
	start := time.Now()
	r.edge.signal(syscall.SIGINT)
	if code := r.edge.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the second signal took %s to stop the edge", d)
	}
	r.edge.waitLog(time.Second, "second signal")

	// The hub drains for its 1 s grace period, then exits 0 on its own.
	r2 := startStandaloneRig(t, rigConfig{hubGrace: 1})
	r2.openStream(t)
	start = time.Now()
	r2.hub.signal(syscall.SIGTERM)
	if code := r2.hub.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("hub exit code %d", code)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 6*time.Second {
		t.Errorf("the hub stopped after %s with a 1 s grace period", d)
	}
	r2.hub.waitLog(time.Second, "grace period over")
	r2.edge.signal(syscall.SIGTERM)
	r2.edge.waitExit(waitLimit)
	r.hub.signal(syscall.SIGTERM)
	r.hub.waitExit(waitLimit)
}

// An edge whose identity comes from a token file.
func TestStandaloneEdgeFromTokenFile(t *testing.T) {
	r := startStandaloneRig(t, rigConfig{})
	r.edge.signal(syscall.SIGTERM)
	r.edge.waitExit(waitLimit)
	secretFile := filepath.Join(r.dir, "edge-1.secret")
	out, errOut, code := runBinary(t, "token", "--hub", "127.0.0.1:"+strconv.Itoa(r.tunnelPort), "--edge-id", "edge-1", "--secret-file", secretFile)
	if code != 0 {
		t.Fatalf("token: code %d, %s", code, errOut)
	}
	tokenFile := writeFile(t, filepath.Join(r.dir, "edge.token"), out)
	// The listen side from a file, the identity from --token-file.
	listen := writeFile(t, filepath.Join(r.dir, "listen.yaml"), fmt.Sprintf("listenHost: 127.0.0.1\nlistenPorts: [%d]\nstunIntervalSecs: 0\n", r.edgePort))
	e := startStandalone(t, "token edge", []string{"REMOTEINGRESS_SECRET="}, "edge", "--config", listen, "--token-file", tokenFile)
	e.waitLog(waitLimit, "tunnel connected")
	r.edge = e
	r.roundTrip(t)
	if strings.Contains(e.allLogs(), testSecret) || strings.Contains(e.allLogs(), strings.TrimSpace(out)) {
		t.Error("the secret or the token is in the edge's logs")
	}
	r.stopBoth(t)
}

func TestTokenCommandRoundTrip(t *testing.T) {
	dir := t.TempDir()
	secretFile := writeFile(t, filepath.Join(dir, "s"), "  "+testSecret+"\n")
	pin := strings.Repeat("AB", 32)
	out, errOut, code := runBinary(t, "token", "--hub", "hub.example.com:9443", "--edge-id", "edge-nyc-01", "--secret-file", secretFile, "--hub-cert-sha256", pin)
	if code != 0 || errOut != "" {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	tok, err := token.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	want := token.Token{HubHost: "hub.example.com", HubPort: 9443, EdgeID: "edge-nyc-01", Secret: testSecret, HubCertSHA256: strings.ToLower(pin)}
	if tok != want {
		t.Fatalf("token holds %v, want %v", tok, want)
	}
	// The secret from the environment; the port defaults to 8443.
	cmd := exec.Command(binary, "token", "--hub", "[::1]", "--edge-id", "e")
	cmd.Env = append(os.Environ(), "REMOTEINGRESS_SECRET=from-env")
	b, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := token.Decode(string(b)); err != nil || tok.HubHost != "::1" || tok.HubPort != 8443 || tok.Secret != "from-env" {
		t.Fatalf("token %v, %v", tok, err)
	}
	// Missing pieces are usage errors.
	for _, args := range [][]string{
		{"token", "--edge-id", "e", "--secret-file", secretFile},
		{"token", "--hub", "h:1", "--secret-file", secretFile},
		{"token", "--hub", "h:99999", "--edge-id", "e", "--secret-file", secretFile},
		{"token", "--hub", "h:1", "--edge-id", "e", "--secret", "x"},
	} {
		if _, _, code := runBinary(t, args...); code != 2 {
			t.Errorf("%q: code %d, want 2", args, code)
		}
	}
}

// check accepts every file of examples/ and names the key and line of a bad one.
func TestCheckExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	more, _ := filepath.Glob("../../examples/*.json")
	files = append(files, more...)
	if len(files) < 4 {
		t.Fatalf("only %d examples", len(files))
	}
	for _, f := range files {
		out, errOut, code := runBinary(t, "check", "--config", f)
		if code != 0 || !strings.Contains(out, "valid") {
			t.Errorf("check %s: code %d, stdout %q, stderr %q", f, code, out, errOut)
		}
	}
}

func TestCheckBadFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "s"), "x\n")
	writeFile(t, filepath.Join(dir, "empty"), "")
	for content, want := range map[string]string{
		"tunnelPort: 8443\ntargetHost: x\nbogus: 1\n":                                                       ":3: bogus is not a known key",
		"hubHost: h\nedgeid: e\n":                                                                           ":2: edgeid is not a known key (did you mean edgeId?)",
		"hubHost: h\nedgeId: e\nsecretFile: s\nlistenPorts: [80, \"443\"]\n":                                ":4: listenPorts[1] must be an integer",
		"hubHost: h\nedgeId: e\nsecretFile: s\nlistenPorts:\n  - 80\n  - 0\n":                               ":6: listenPorts[1] must be an integer 1-65535",
		"hubHost: h\nhubPort: 70000\nedgeId: e\nsecretFile: s\nlistenPorts: [1]\n":                          ":2: hubPort must be an integer 1-65535",
		"hubHost: h\nedgeId: e\nsecretFile: empty\nlistenPorts: [1]\n":                                      ":3: secretFile names an empty file",
		"hubHost: h\nedgeId: e\nsecretFile: nope\nlistenPorts: [1]\n":                                       ":3: secretFile cannot be read",
		"hubHost: h\nedgeId: e\nsecretFile: s\nlistenPortsUdp: [53, 53]\n":                                  ":4: listenPortsUdp lists port 53 twice",
		"tunnelPort: 1\nallowedEdges:\n  - id: a\n    secret: x\n    firewall:\n      blockedIps: [nope]\n": ":6: allowedEdges[0].firewall.blockedIps[0] is not an IP address or CIDR",
		"tunnelPort: 1\nallowedEdges:\n  - id: a\n    secret: x\n  - id: a\n    secret: y\n":                `:5: allowedEdges[1].id "a" duplicates allowedEdges[0].id`,
		"tunnelPort: 1\nallowedEdges:\n  - id: a\n    secretFile: empty\n":                                  ":4: allowedEdges[0].secretFile names an empty file",
		"tunnelPort: 1\nallowedEdges:\n  - id: a\n    password: x\n":                                        ":4: password is not a known key",
		"tunnelPort: 1\nallowedEdgesFile: empty\n":                                                          "empty: is empty",
		"tunnelPort: 1\ntlsCertPem: x\n":                                                                    "tlsKeyPem must be given together with tlsCertPem",
		"tunnelPort: 1\ngracePeriodSecs: -1\n":                                                              ":2: gracePeriodSecs must be an integer 0-",
		"tunnelPort: 1\nlogFormat: xml\n":                                                                   ":2: logFormat must be",
		"tunnelPort: 1\nhubHost: h\n":                                                                       ":2: hubHost is an edge key, but tunnelPort on line 1 is a hub key",
		"tunnelPort: 1\ntunnelPort: 2\n":                                                                    ":2: tunnelPort is given twice",
		"tunnelPort: [1\n":                                                                                  "is not valid YAML",
		"logLevel: info\n":                                                                                  "cannot tell a hub file from an edge file",
		"- id: a\n  secret: \"\"\n":                                                                         `:2: [0].secret must not be empty (edge "a")`,
	} {
		f := writeFile(t, filepath.Join(dir, "c.yaml"), content)
		out, errOut, code := runBinary(t, "check", "--config", f)
		if code != 1 || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("check of\n%s: code %d, stdout %q, stderr %q; want code 1 and %q", content, code, out, errOut, want)
		}
	}
	if _, _, code := runBinary(t, "check"); code != 2 {
		t.Errorf("check without --config: code %d, want 2", code)
	}
}

// A hub that cannot start (a bad file) exits 1 with the reason on stderr.
func TestStandaloneBadConfigExits1(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, filepath.Join(dir, "hub.yaml"), "tunnelPort: 0\nlistenHost: 127.0.0.1\nallowedEdges: [{id: a}]\n")
	_, errOut, code := runBinary(t, "hub", "--config", f)
	if code != 1 || !strings.Contains(errOut, `hub.yaml:3: allowedEdges[0].secret is required (edge "a")`) {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	_, errOut, code = runBinary(t, "edge")
	if code != 2 || !strings.Contains(errOut, "usage: remoteingress-bin edge") {
		t.Fatalf("edge without config: code %d, stderr %q", code, errOut)
	}
}

func TestHelp(t *testing.T) {
	out, _, code := runBinary(t, "help")
	if code != 0 || !strings.Contains(out, "remoteingress-bin hub --config FILE") || !strings.Contains(out, "--management") {
		t.Fatalf("help: code %d, %q", code, out)
	}
	for _, sub := range []string{"hub", "edge", "check", "token"} {
		out, _, code := runBinary(t, sub, "--help")
		if code != 0 || !strings.HasPrefix(out, "usage: remoteingress-bin "+sub) {
			t.Errorf("%s --help: code %d, %q", sub, code, out)
		}
		out2, _, _ := runBinary(t, "help", sub)
		if out2 != out {
			t.Errorf("help %s differs from %s --help", sub, sub)
		}
	}
	if _, errOut, code := runBinary(t, "hub", "--bogus"); code != 2 || !strings.Contains(errOut, "usage: remoteingress-bin hub") {
		t.Errorf("hub --bogus: code %d, %q", code, errOut)
	}
}

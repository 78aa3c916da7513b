package systest

import (
	"context"
	"encoding/binary"
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
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// startNginx runs nginx on 127.0.0.2:port with proxy_protocol, answering
// every request with the client address of the PROXY header.
func startNginx(t testing.TB, port int) *daemon {
	t.Helper()
	bin := requireTool(t, "nginx", "nginx")
	dir := t.TempDir()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // do not switch to nobody, which cannot read the temp dir
	}
	conf := fmt.Sprintf(`%s
master_process off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    keepalive_requests 200;
    server {
        listen 127.0.0.2:%[3]d proxy_protocol;
        location / {
            default_type text/plain;
            return 200 "$proxy_protocol_addr:$proxy_protocol_port\n";
        }
    }
}
`, user, dir, port)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "nginx", exec.Command(bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"))
	d.waitTCP(t, hostPort("127.0.0.2", port))
	return d
}

// startHAProxy runs HAProxy on 127.0.0.2:port with accept-proxy, answering
// with the source address and logging it to stdout.
func startHAProxy(t testing.TB, port int) *daemon {
	t.Helper()
	bin := requireTool(t, "haproxy", "haproxy")
	dir := t.TempDir()
	conf := fmt.Sprintf(`global
    maxconn 4000
    pidfile %[1]s/haproxy.pid
    log stdout format raw local0 info

defaults
    mode http
    log global
    log-format "client=%%ci:%%cp status=%%ST"
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.2:%[2]d accept-proxy
    http-request return status 200 content-type text/plain lf-string "%%[src]:%%[src_port]\n"
`, dir, port)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	d := startDaemon(t, "haproxy", exec.Command(bin, "-db", "-f", path))
	d.waitTCP(t, hostPort("127.0.0.2", port))
	return d
}

// httpGet sends one HTTP/1.1 request over a new connection to addr and
// returns the body and the client socket's local address.
func httpGet(addr string) (body, local string, err error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	local = c.LocalAddr().String()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: systest\r\nConnection: close\r\n\r\n"); err != nil {
		return "", local, err
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		return "", local, err
	}
	s := string(resp)
	if !strings.HasPrefix(s, "HTTP/1.1 200") {
		return "", local, fmt.Errorf("response %q", s)
	}
	i := strings.Index(s, "\r\n\r\n")
	if i < 0 {
		return "", local, fmt.Errorf("no body in %q", s)
	}
	return strings.TrimSpace(s[i+4:]), local, nil
}

// checkRealClient sends n requests to addr and checks that the server
// reports each client socket's own address.
func checkRealClient(t *testing.T, label, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		body, local, err := httpGet(addr)
		if err != nil {
			t.Fatalf("%s: request %d to %s: %v", label, i, addr, err)
		}
		want := canonicalAddr(local)
		if canonicalAddr(body) != want {
			t.Fatalf("%s: request %d: the server reports client %q, the client socket is %q", label, i, body, local)
		}
		if i == 0 {
			t.Logf("%s: client %s -> server reports %s", label, local, body)
		}
	}
}

// canonicalAddr turns "ip:port", "[ip]:port" and nginx's "::1:port" into one form.
func canonicalAddr(s string) string {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s
	}
	host := strings.Trim(s[:i], "[]")
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return net.JoinHostPort(host, s[i+1:])
}

// proxyConsumerTest runs IPv4 and IPv6 clients through the tunnel to a real
// PROXY-protocol consumer on 127.0.0.2:port, the hub writing PROXY v1.
func proxyConsumerTest(t *testing.T, port int) *rig {
	return proxyConsumerTestWith(t, port, "v1")
}

// proxyConsumerTestWith is proxyConsumerTest with the hub's proxyProtocol.
// With "v2" the hub forwards to a tap on 127.0.0.3:port in front of the
// consumer, which checks that every connection starts with a PROXY v2
// header (nginx and HAProxy take either version, so their answers alone
// would not show which one they got).
func proxyConsumerTestWith(t *testing.T, port int, version string) *rig {
	target := "127.0.0.2"
	var tap *v2Tap
	if version == "v2" {
		tap = startV2Tap(t, hostPort("127.0.0.3", port), hostPort("127.0.0.2", port))
		target = "127.0.0.3"
	}
	hubParams := map[string]any{"tunnelPort": 0, "targetHost": target}
	if version != "v1" {
		hubParams["proxyProtocol"] = version // v1 is the default
	}
	r := newRigWith(t, "", hubParams, "edge-v4", "edge-v6")
	var st struct {
		ProxyProtocol string `json:"proxyProtocol"`
	}
	if r.Hub.MustCall(t, "getHubStatus", nil, &st); st.ProxyProtocol != version {
		t.Fatalf("hub status proxyProtocol %q, want %q", st.ProxyProtocol, version)
	}
	r.startEdge(t, "edge-v4", "edge-v4", "", "127.0.0.1", map[string]any{"listenHost": "127.0.0.1", "listenPorts": []int{port}})
	r.startEdge(t, "edge-v6", "edge-v6", "", "127.0.0.1", map[string]any{"listenHost": "::1", "listenPorts": []int{port}})
	checkRealClient(t, "IPv4 "+version, hostPort("127.0.0.1", port), 20)
	checkRealClient(t, "IPv6 "+version, hostPort("::1", port), 20)
	if tap != nil {
		if n, v2 := tap.counts(); n != 40 || v2 != n {
			t.Fatalf("the tap in front of the consumer saw %d connections, %d of them starting with a PROXY v2 header; want 40 and 40", n, v2)
		}
	}
	return r
}

// v2Tap forwards TCP connections to a target, counting those whose first
// bytes are the PROXY v2 signature and a PROXY command.
type v2Tap struct {
	mu      sync.Mutex
	n, v2   int
	ln      net.Listener
	wg      sync.WaitGroup
	closing chan struct{}
}

// v2Prefix is the v2 signature followed by version 2, command PROXY.
const v2Prefix = "\r\n\r\n\x00\r\nQUIT\n\x21"

func startV2Tap(t *testing.T, listen, target string) *v2Tap {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("tap: %v", err)
	}
	tp := &v2Tap{ln: ln, closing: make(chan struct{})}
	tp.wg.Add(1)
	go func() {
		defer tp.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tp.wg.Add(1)
			go func() {
				defer tp.wg.Done()
				tp.relay(c, target)
			}()
		}
	}()
	t.Cleanup(func() {
		close(tp.closing)
		ln.Close()
		tp.wg.Wait()
	})
	return tp
}

// relay reads the first bytes of c, counts them, and copies both ways
// between c and a new connection to target until both sides are done.
func (tp *v2Tap) relay(c net.Conn, target string) {
	defer c.Close()
	// Read the whole header first: consumers want it in one segment, as
	// the hub writes it.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	head := make([]byte, 16, 16+216)
	n, _ := io.ReadFull(c, head)
	isV2 := n == 16 && string(head[:len(v2Prefix)]) == v2Prefix
	if isV2 {
		rest := int(binary.BigEndian.Uint16(head[14:16]))
		head = head[:16+rest]
		m, _ := io.ReadFull(c, head[16:])
		n += m
	}
	head = head[:n]
	_ = c.SetReadDeadline(time.Time{})
	tp.mu.Lock()
	tp.n++
	if isV2 {
		tp.v2++
	}
	tp.mu.Unlock()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		// End the copies when the test ends, whatever the peers do.
		select {
		case <-tp.closing:
			c.Close()
			up.Close()
		case <-time.After(time.Minute):
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = up.Write(head)
		_, _ = io.Copy(up, c)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(c, up)
	_ = c.(*net.TCPConn).CloseWrite()
	<-done
}

// counts returns how many connections the tap saw, and how many of them
// started with a PROXY v2 header.
func (tp *v2Tap) counts() (n, v2 int) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.n, tp.v2
}

// TestNginxProxyProtocol: nginx with `listen ... proxy_protocol` behind the
// hub reports the real client address of IPv4 and IPv6 clients.
func TestNginxProxyProtocol(t *testing.T) {
	port := testutil.FreePort(t, loopbacks...)
	startNginx(t, port)
	proxyConsumerTest(t, port)
}

// TestHAProxyProxyProtocol: HAProxy with `accept-proxy` behind the hub
// answers and logs the real client address of IPv4 and IPv6 clients.
func TestHAProxyProxyProtocol(t *testing.T) {
	port := testutil.FreePort(t, loopbacks...)
	h := startHAProxy(t, port)
	proxyConsumerTest(t, port)
	// HAProxy's own log names the same clients.
	if !testutil.Poll(5*time.Second, func() bool {
		out := h.out.String()
		return strings.Contains(out, "client=127.0.0.1:") && strings.Contains(out, "client=::1:")
	}) {
		t.Errorf("HAProxy's log does not show the IPv4 and IPv6 clients:\n%s", tail(h.out.String(), 20))
	}
}

// TestNginxProxyProtocolV2: with the hub's proxyProtocol "v2", nginx with
// `listen ... proxy_protocol` gets binary v2 headers and reports the real
// client address of IPv4 and IPv6 clients.
func TestNginxProxyProtocolV2(t *testing.T) {
	port := testutil.FreePort(t, append(loopbacks, "127.0.0.3")...)
	startNginx(t, port)
	proxyConsumerTestWith(t, port, "v2")
}

// TestHAProxyProxyProtocolV2: with the hub's proxyProtocol "v2", HAProxy
// with `accept-proxy` gets binary v2 headers and answers and logs the real
// client address of IPv4 and IPv6 clients.
func TestHAProxyProxyProtocolV2(t *testing.T) {
	port := testutil.FreePort(t, append(loopbacks, "127.0.0.3")...)
	h := startHAProxy(t, port)
	proxyConsumerTestWith(t, port, "v2")
	if !testutil.Poll(5*time.Second, func() bool {
		out := h.out.String()
		return strings.Contains(out, "client=127.0.0.1:") && strings.Contains(out, "client=::1:")
	}) {
		t.Errorf("HAProxy's log does not show the IPv4 and IPv6 clients:\n%s", tail(h.out.String(), 20))
	}
}

// wrkResult is what we read from wrk's summary.
type wrkResult struct {
	Requests                               int64
	RPS                                    float64
	Connect, Read, Write, Timeout, Non2xx3 int64
	Raw                                    string
}

var (
	wrkReqRe    = regexp.MustCompile(`(\d+) requests in`)
	wrkRPSRe    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkSockRe   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRe = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func runWrk(t *testing.T, url string, conns int, dur time.Duration) wrkResult {
	t.Helper()
	bin := requireTool(t, "wrk", "wrk")
	ctx, cancel := context.WithTimeout(context.Background(), dur+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-t", "2", "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", int(dur.Seconds())),
		"--timeout", "5s", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	s := string(out)
	res := wrkResult{Raw: s}
	atoi := func(x string) int64 { n, _ := strconv.ParseInt(x, 10, 64); return n }
	if m := wrkReqRe.FindStringSubmatch(s); m != nil {
		res.Requests = atoi(m[1])
	} else {
		t.Fatalf("cannot read wrk's output:\n%s", s)
	}
	if m := wrkRPSRe.FindStringSubmatch(s); m != nil {
		res.RPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := wrkSockRe.FindStringSubmatch(s); m != nil {
		res.Connect, res.Read, res.Write, res.Timeout = atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4])
	}
	if m := wrkNon2xxRe.FindStringSubmatch(s); m != nil {
		res.Non2xx3 = atoi(m[1])
	}
	return res
}

// TestWrkLoadThroughTunnel: 200 concurrent keep-alive HTTP connections for
// 10 s through edge and hub to nginx: no errors, and afterwards both
// processes are back to their idle fd count with no active streams.
func TestWrkLoadThroughTunnel(t *testing.T) {
	requireTool(t, "wrk", "wrk")
	port := testutil.FreePort(t, loopbacks...)
	startNginx(t, port)
	r := newRig(t, "", 0, "127.0.0.2", "edge-load")
	edge := r.startEdge(t, "edge", "edge-load", "", "127.0.0.1", map[string]any{"listenHost": "127.0.0.1", "listenPorts": []int{port}})
	checkRealClient(t, "warm-up", hostPort("127.0.0.1", port), 3)

	hubFDs, edgeFDs := r.Hub.settledFDs(t), edge.settledFDs(t)
	hubRSS, edgeRSS := r.Hub.RSS(t), edge.RSS(t)
	hubG, edgeG := r.Hub.goroutines(t, true), edge.goroutines(t, false)
	res := runWrk(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 200, 10*time.Second)
	t.Logf("wrk -c 200 -d 10s: %d requests, %.0f req/s; socket errors connect %d read %d write %d timeout %d; non-2xx/3xx %d",
		res.Requests, res.RPS, res.Connect, res.Read, res.Write, res.Timeout, res.Non2xx3)
	if res.Requests == 0 || res.Connect+res.Read+res.Write+res.Timeout+res.Non2xx3 != 0 {
		t.Errorf("wrk saw errors:\n%s", res.Raw)
	}
	_, hf := r.Hub.WaitIdle(t, true, hubFDs, 15*time.Second)
	_, ef := edge.WaitIdle(t, false, edgeFDs, 15*time.Second)
	hg, eg := r.Hub.WaitGoroutines(t, true, hubG, 15*time.Second), edge.WaitGoroutines(t, false, edgeG, 15*time.Second)
	t.Logf("fds hub %d -> %d, edge %d -> %d; goroutines hub %d -> %d, edge %d -> %d; RSS hub %s -> %s, edge %s -> %s",
		hubFDs, hf, edgeFDs, ef, hubG, hg, edgeG, eg, mib(hubRSS), mib(r.Hub.RSS(t)), mib(edgeRSS), mib(edge.RSS(t)))
	if hg > hubG || eg > edgeG {
		t.Errorf("goroutines not back to baseline: hub %d -> %d, edge %d -> %d", hubG, hg, edgeG, eg)
	}
	if st := r.Hub.HubStatus(t); st.EventsDropped != 0 {
		t.Logf("hub dropped %d events", st.EventsDropped)
	}
	// The tunnel still works afterwards.
	checkRealClient(t, "after load", hostPort("127.0.0.1", port), 3)
}

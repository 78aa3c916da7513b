package monitor

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel"
)

const testSecret = "s3cret-that-must-never-show-9f8e7d"

// contractSeries are the series of contract section 11, by family, with the
// labels that pick the one sample checked (side and edge_id where a family
// has both sides).
var contractSeries = []struct {
	name   string
	labels map[string]string
}{
	{"remoteingress_hub_edges_connected", nil},
	{"remoteingress_hub_auth_failures_total", nil},
	{"remoteingress_edge_tunnel_up", map[string]string{"edge_id": "edge-1"}},
	{"remoteingress_edge_reconnects_total", map[string]string{"edge_id": "edge-1"}},
	{"remoteingress_firewall_refused_total", map[string]string{"edge_id": "edge-1"}},
	{"remoteingress_streams_active", map[string]string{"side": "hub", "edge_id": "edge-1"}},
	{"remoteingress_streams_active", map[string]string{"side": "edge", "edge_id": "edge-1"}},
	{"remoteingress_streams_total", map[string]string{"side": "hub", "edge_id": "edge-1"}},
	{"remoteingress_streams_total", map[string]string{"side": "edge", "edge_id": "edge-1"}},
	{"remoteingress_bytes_total", map[string]string{"side": "hub", "edge_id": "edge-1", "direction": "in"}},
	{"remoteingress_bytes_total", map[string]string{"side": "hub", "edge_id": "edge-1", "direction": "out"}},
	{"remoteingress_bytes_total", map[string]string{"side": "edge", "edge_id": "edge-1", "direction": "in"}},
	{"remoteingress_bytes_total", map[string]string{"side": "edge", "edge_id": "edge-1", "direction": "out"}},
	{"remoteingress_udp_flows_active", map[string]string{"side": "hub", "edge_id": "edge-1"}},
	{"remoteingress_udp_flows_active", map[string]string{"side": "edge", "edge_id": "edge-1"}},
}

// scrape fetches and parses /metrics with the Prometheus text parser.
func scrape(t *testing.T, addr string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams, string(body)
}

// value finds the sample of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func mustValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := value(fams, name, labels)
	if !ok {
		t.Fatalf("series %s%v missing", name, labels)
	}
	return v
}

func get(t *testing.T, addr, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// gate is a TCP relay in front of the hub that the test opens and shuts:
// while shut it holds new connections without a byte (the edge's attempt
// hangs in its handshake); cut closes every relayed connection.
type gate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	open   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			g.conns[c] = struct{}{}
			open := g.open
			g.mu.Unlock()
			if open {
				g.wg.Add(1)
				go g.relay(c)
			}
		}
	}()
	t.Cleanup(g.close)
	return g
}

func (g *gate) port() int { return g.ln.Addr().(*net.TCPAddr).Port }

func (g *gate) relay(c net.Conn) {
	defer g.wg.Done()
	up, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	g.conns[up] = struct{}{}
	g.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

// set opens or shuts the gate and cuts every connection through it.
func (g *gate) set(open bool) {
	g.mu.Lock()
	g.open = open
	for c := range g.conns {
		c.Close()
		delete(g.conns, c)
	}
	g.mu.Unlock()
}

func (g *gate) close() {
	g.ln.Close()
	g.set(false)
	g.wg.Wait()
}

// startEcho is a target on 127.0.0.2 that reads the PROXY header line and
// echoes the rest.
func startEcho(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				_, _ = io.Copy(c, br)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// TestMetricsAndReadinessOfAHubAndAnEdge runs a hub and an edge in this
// process with one metrics listener: every contract series is there from the
// start at 0, moves with traffic, /readyz follows the tunnel down, up, down
// and up, and no secret or client address shows anywhere.
func TestMetricsAndReadinessOfAHubAndAnEdge(t *testing.T) {
	targetPort := startEcho(t)
	hub, err := tunnel.StartHub(tunnel.HubConfig{ListenHost: "127.0.0.1", TargetHost: "127.0.0.2"},
		[]tunnel.EdgeCredential{{ID: "edge-1", Secret: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	g := startGate(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(hub.Port())))

	edge, err := tunnel.StartEdge(tunnel.EdgeConfig{HubHost: "127.0.0.1", HubPort: g.port(), EdgeID: "edge-1", Secret: testSecret,
		ListenHost: "127.0.0.1", ListenPorts: []int{targetPort}, StunInterval: -1,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()

	srv, err := Listen("127.0.0.1:0", "1.2.3-test")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr := srv.Addr()
	if get(t, addr, "/readyz") != http.StatusServiceUnavailable {
		t.Fatal("/readyz with nothing attached is not 503")
	}
	srv.SetHub(hub)
	srv.SetEdge(edge)

	// From the start: every series, at 0 (the edge's first attempt hangs at the gate).
	fams, _ := scrape(t, addr)
	if v := mustValue(t, fams, "remoteingress_build_info", map[string]string{"version": "1.2.3-test"}); v != 1 {
		t.Fatalf("build_info = %v", v)
	}
	for _, s := range contractSeries {
		if v := mustValue(t, fams, s.name, s.labels); v != 0 {
			t.Errorf("%s%v = %v at the start, want 0", s.name, s.labels, v)
		}
	}
	if fams["remoteingress_streams_total"].GetType() != dto.MetricType_COUNTER || fams["remoteingress_streams_active"].GetType() != dto.MetricType_GAUGE {
		t.Error("streams_total is not a counter or streams_active not a gauge")
	}
	if _, ok := fams["process_resident_memory_bytes"]; !ok {
		t.Error("no process metrics")
	}
	if c := get(t, addr, "/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz = %d", c)
	}
	if c := get(t, addr, "/readyz"); c != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the tunnel down = %d, want 503", c)
	}

	// Up: the gate opens (the held attempt is cut, the retry gets through).
	g.set(true)
	testutil.Eventually(t, 10*time.Second, "/readyz 200 with the tunnel up", func() bool {
		return get(t, addr, "/readyz") == http.StatusOK
	})

	// Traffic: one stream of n bytes each way.
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(targetPort)))
	if err != nil {
		t.Fatal(err)
	}
	clientAddr := c.LocalAddr().String()
	n := 300 << 10
	payload := bytes.Repeat([]byte("m"), n)
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || len(got) != n {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	var body string
	testutil.Eventually(t, 5*time.Second, "the stream counted and closed on both sides", func() bool {
		fams, body = scrape(t, addr)
		for _, side := range []string{"hub", "edge"} {
			l := map[string]string{"side": side, "edge_id": "edge-1"}
			if mustValue(t, fams, "remoteingress_streams_total", l) != 1 || mustValue(t, fams, "remoteingress_streams_active", l) != 0 {
				return false
			}
			for _, dir := range []string{"in", "out"} {
				if mustValue(t, fams, "remoteingress_bytes_total", map[string]string{"side": side, "edge_id": "edge-1", "direction": dir}) != float64(n) {
					return false
				}
			}
		}
		return true
	})
	if mustValue(t, fams, "remoteingress_hub_edges_connected", nil) != 1 ||
		mustValue(t, fams, "remoteingress_edge_tunnel_up", map[string]string{"edge_id": "edge-1"}) != 1 ||
		mustValue(t, fams, "remoteingress_edge_reconnects_total", map[string]string{"edge_id": "edge-1"}) < 1 {
		t.Fatalf("after traffic:\n%s", body)
	}
	for _, bad := range []string{testSecret, clientAddr, "127.0.0."} {
		if strings.Contains(body, bad) {
			t.Fatalf("/metrics contains %q", bad)
		}
	}

	// Down: the hub changes edge-1's secret, so the edge's retries fail
	// their proof and count as auth failures.
	if err := hub.SetAllowedEdges([]tunnel.EdgeCredential{{ID: "edge-1", Secret: "another-secret"}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "/readyz 503 and auth failures counted", func() bool {
		fams, _ := scrape(t, addr)
		return get(t, addr, "/readyz") == http.StatusServiceUnavailable &&
			mustValue(t, fams, "remoteingress_hub_auth_failures_total", nil) >= 1 &&
			mustValue(t, fams, "remoteingress_edge_tunnel_up", map[string]string{"edge_id": "edge-1"}) == 0
	})
	// Up again with the old secret.
	if err := hub.SetAllowedEdges([]tunnel.EdgeCredential{{ID: "edge-1", Secret: testSecret}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "/readyz 200 with the secret back", func() bool {
		return get(t, addr, "/readyz") == http.StatusOK
	})

	// Down: the gate shuts and cuts the tunnel.
	g.set(false)
	testutil.Eventually(t, 10*time.Second, "/readyz 503 with the tunnel down", func() bool {
		return get(t, addr, "/readyz") == http.StatusServiceUnavailable
	})
	fams, _ = scrape(t, addr)
	if mustValue(t, fams, "remoteingress_edge_tunnel_up", map[string]string{"edge_id": "edge-1"}) != 0 {
		t.Fatal("tunnel_up is not 0 with the tunnel down")
	}
	// And up again.
	g.set(true)
	testutil.Eventually(t, 10*time.Second, "/readyz 200 again", func() bool {
		return get(t, addr, "/readyz") == http.StatusOK
	})
	if _, body = scrape(t, addr); strings.Contains(body, testSecret) {
		t.Fatal("/metrics contains the secret")
	}
}

// TestHubOnlyAndEdgeOnlySeries: each side writes its own families; the
// other side's are absent.
func TestHubOnlyAndEdgeOnlySeries(t *testing.T) {
	var b bytes.Buffer
	writeSeries(&b, "v", &tunnel.HubMetrics{Edges: []tunnel.HubEdgeMetrics{{EdgeID: `we"ird\id` + "\n"}}}, nil)
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if _, ok := fams["remoteingress_edge_tunnel_up"]; ok {
		t.Error("a hub alone writes edge series")
	}
	if _, ok := value(fams, "remoteingress_streams_total", map[string]string{"edge_id": `we"ird\id` + "\n", "side": "hub"}); !ok {
		t.Errorf("an odd edge id does not round-trip:\n%s", b.String())
	}
	b.Reset()
	writeSeries(&b, "v", nil, &tunnel.EdgeMetrics{EdgeID: "e"})
	fams, err = p.TextToMetricFamilies(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fams["remoteingress_hub_edges_connected"]; ok {
		t.Error("an edge alone writes hub series")
	}
	if _, ok := value(fams, "remoteingress_edge_tunnel_up", map[string]string{"edge_id": "e"}); !ok {
		t.Error("no tunnel_up")
	}
}

// TestListenOnATakenAddressFails names the address.
func TestListenOnATakenAddressFails(t *testing.T) {
	s, err := Listen("127.0.0.1:0", "v")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Listen(s.Addr(), "v")
	if err == nil || !strings.Contains(err.Error(), s.Addr()) {
		t.Fatalf("second Listen on %s: %v", s.Addr(), err)
	}
	if c := get(t, s.Addr(), "/healthz"); c != http.StatusOK {
		t.Fatalf("the first server's /healthz = %d", c)
	}
}

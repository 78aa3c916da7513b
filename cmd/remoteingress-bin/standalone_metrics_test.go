package main

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// metricsAddress is the address p's metricsListen bound, from its log.
func metricsAddress(t *testing.T, p *sproc) string {
	t.Helper()
	line := p.waitLog(waitLimit, "metrics listening")
	m := regexp.MustCompile(`metricsAddress=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no metrics address in %q", line)
	}
	return m[1]
}

// get fetches path from addr and returns the status and the body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// The hub and the edge of config files with metricsListen serve /metrics in
// the Prometheus text format with every series of the contract (parsed by
// Prometheus' own parser), /healthz, and /readyz, which follows the tunnel;
// no secret and no client address is in what they serve.
func TestStandaloneMetricsAndHealth(t *testing.T) {
	r := startStandaloneRig(t, rigConfig{metrics: true})
	r.roundTrip(t)
	series := map[string][]string{
		r.hubMetrics: {"remoteingress_build_info", "remoteingress_hub_edges_connected", "remoteingress_hub_auth_failures_total",
			"remoteingress_streams_active", "remoteingress_streams_total", "remoteingress_bytes_total", "remoteingress_udp_flows_active"},
		r.edgeMetrics: {"remoteingress_build_info", "remoteingress_edge_tunnel_up", "remoteingress_edge_reconnects_total",
			"remoteingress_streams_active", "remoteingress_streams_total", "remoteingress_bytes_total",
			"remoteingress_udp_flows_active", "remoteingress_firewall_refused_total"},
	}
	for addr, names := range series {
		code, body := get(t, addr, "/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics of %s: %d", addr, code)
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatalf("parsing /metrics of %s: %v", addr, err)
		}
		for _, n := range names {
			if fams[n] == nil {
				t.Errorf("%s: no series %s", addr, n)
			}
		}
		total := fams["remoteingress_streams_total"]
		if total == nil || len(total.GetMetric()) == 0 || total.GetMetric()[0].GetCounter().GetValue() < 1 {
			t.Errorf("%s: streams_total did not count the round trip", addr)
		}
		for _, bad := range []string{testSecret, "127.0.0.1:", "127.0.0.2"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s: /metrics holds %q", addr, bad)
			}
		}
		if code, _ := get(t, addr, "/healthz"); code != http.StatusOK {
			t.Errorf("%s: /healthz %d", addr, code)
		}
		if code, _ := get(t, addr, "/readyz"); code != http.StatusOK {
			t.Errorf("%s: /readyz %d with the tunnel up", addr, code)
		}
	}
	// The hub goes: the edge is no longer ready, but still healthy.
	r.hub.signal(syscall.SIGTERM)
	if code := r.hub.waitExit(waitLimit); code != 0 {
		t.Errorf("hub exit code %d", code)
	}
	testutil.Eventually(t, 10*time.Second, "the edge's /readyz to answer 503 without a hub", func() bool {
		code, _ := get(t, r.edgeMetrics, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if code, _ := get(t, r.edgeMetrics, "/healthz"); code != http.StatusOK {
		t.Errorf("edge /healthz %d while the hub is away", code)
	}
	r.edge.signal(syscall.SIGTERM)
	if code := r.edge.waitExit(waitLimit); code != 0 {
		t.Errorf("edge exit code %d", code)
	}
}

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestQuickRun builds the binary and the bench, runs `-quick` end to end and
// checks that bench.json has a positive number in every row for every set-up
// it applies to, that the hub's stream events matched the connections, and
// that no process of either binary is left afterwards.
func TestQuickRun(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the bench reads /proc: Linux only")
	}
	if testing.Short() {
		t.Skip("the quick bench run takes about 30 s; skipped with -short")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no go tool to build the binaries: %v", err)
		}
		t.Skipf("no go tool to build the binaries (%v); set CI=true to make this a failure", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "remoteingress-bin")
	bench := filepath.Join(dir, "remoteingress-bench")
	build := func(out, pkg string) {
		cmd := exec.Command(goTool, "build", "-o", out, pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	build(bin, "../remoteingress-bin")
	build(bench, ".")

	raw := runBench(t, bench, bin, filepath.Join(dir, "bench.json"), 4*time.Minute, "-quick")
	var rep struct {
		Rows []struct {
			Key       string              `json:"key"`
			Values    map[string]*float64 `json:"values"`
			AppliesTo []string            `json:"appliesTo"`
		} `json:"rows"`
		Machine struct {
			CPUModel string `json:"cpuModel"`
			Cores    int    `json:"cores"`
		} `json:"machine"`
		Problems []string `json:"problems"`
		Error    string   `json:"error"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("bench.json: %v", err)
	}
	if rep.Error != "" {
		t.Errorf("bench.json error: %s", rep.Error)
	}
	for _, p := range rep.Problems {
		t.Logf("problem reported: %s", p)
	}
	if rep.Machine.Cores <= 0 || rep.Machine.CPUModel == "" {
		t.Errorf("machine info missing: %+v", rep.Machine)
	}
	want := []string{
		"throughput_1_up_gbps", "throughput_1_down_gbps", "throughput_n_up_gbps", "cpu_seconds_per_gb",
		"latency_1_p50_us", "latency_1_p99_us", "latency_n_p50_us", "latency_n_p99_us", "latency_n_rate",
		"conn_rate", "rss_idle_mib", "rss_100_mib", "rss_1000_mib", "mem_conns_reached", "mem_kib_per_conn",
		"fair_bulk_ratio", "fair_inflight_kib",
		"events_connections", "events_stream_opened", "events_stream_closed",
		"port_change_p50_ms", "port_change_p90_ms", "port_change_max_ms", "port_change_removed_refused",
		"fw_auto_conn_rate_without", "fw_auto_conn_rate_with", "fw_auto_ratio", "fw_auto_ratio_median", "fw_auto_cpu_ratio",
		"hubs_conn_rate_one", "hubs_conn_rate_two", "hubs_conn_rate_ratio", "hubs_conn_busier_pct",
		"hubs_streams_one_gbps", "hubs_streams_two_gbps", "hubs_streams_ratio", "hubs_streams_busier_pct",
		"hubs_kill_notice_ms", "hubs_kill_inflight", "hubs_kill_failed", "hubs_restart_connected_ms", "hubs_stop_failed",
		"udp_rtt_p50_us", "udp_rtt_p90_us", "udp_rtt64_p50_us", "udp_rtt64_p90_us", "udp_flows_rtps", "udp_offered_delivered_pps", "udp_cpu_s_per_gb", "udp_rate_pps", "udp_rate_mbps", "udp_mem_hub_kib_per_flow", "udp_mem_edge_kib_per_flow",
		"udp_mem_flows", "udp_fair_tcp_ratio", "udp_fair_flood_pps", "udp_fair_delivered_pps", "udp_fair_dropped", "udp_fair_cpu_ratio", "udp_fair_sender_cores", "udp_fair_unread_tcp_ratio", "udp_fair_unread_sender_cores",
		"fw_process_conn_rate_without", "fw_process_conn_rate_with", "fw_process_ratio", "fw_process_ratio_median", "fw_process_cpu_ratio",
	}
	// Counts of failures and of connections in flight may well be 0.
	mayBeZero := map[string]bool{"hubs_kill_inflight": true, "hubs_kill_failed": true, "hubs_stop_failed": true, "udp_fair_dropped": true}
	rows := map[string]map[string]*float64{}
	for _, r := range rep.Rows {
		rows[r.Key] = r.Values
		for _, mode := range r.AppliesTo {
			if v := r.Values[mode]; v == nil || *v < 0 || (*v == 0 && !mayBeZero[r.Key]) {
				t.Errorf("row %s, %s: want a positive number, got %v", r.Key, mode, v)
			}
		}
	}
	for _, k := range want {
		if rows[k] == nil {
			t.Errorf("row %s missing from bench.json", k)
		}
	}
	if v := rows["port_change_removed_refused"]; v != nil && v[modeTunnel] != nil && *v[modeTunnel] != 3 {
		t.Errorf("port_change_removed_refused: got %v, want 3 (every port removed in -quick's 3 changes stopped accepting)", *v[modeTunnel])
	}
	if ev := rows["events_connections"]; ev != nil && ev[modeTunnel] != nil {
		made := *ev[modeTunnel]
		for _, k := range []string{"events_stream_opened", "events_stream_closed"} {
			if v := rows[k][modeTunnel]; v == nil || *v != made {
				t.Errorf("%s: got %v, want %v (one per connection)", k, v, made)
			}
		}
	}
	if v := rows["hubs_stop_failed"]; v != nil && v[modeTunnel] != nil && *v[modeTunnel] != 0 {
		t.Errorf("hubs_stop_failed: got %v, want 0 (a graceful stopHub of one of two hubs refuses no client)", *v[modeTunnel])
	}

	t.Run("metrics-ab", func(t *testing.T) { quickMetricsAB(t, bench, bin, dir) })
}

// quickMetricsAB runs -metrics-ab on one small row: both set-ups measured,
// the metrics listeners scraped, every process gone afterwards.
func quickMetricsAB(t *testing.T, bench, bin, dir string) {
	raw := runBench(t, bench, bin, filepath.Join(dir, "bench-metrics.json"), 2*time.Minute,
		"-metrics-ab", "-quick", "-rows", "connrate", "-conns", "300", "-scrape-interval", "50ms")
	var rep struct {
		Rows []struct {
			Key string    `json:"key"`
			Off []float64 `json:"off"`
			On  []float64 `json:"on"`
		} `json:"rows"`
		Scrapes int `json:"scrapes"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Key != "connrate" || len(rep.Rows[0].Off) != 2 || len(rep.Rows[0].On) != 2 ||
		rep.Rows[0].Off[0] <= 0 || rep.Rows[0].On[0] <= 0 || rep.Scrapes == 0 {
		t.Fatalf("bench-metrics.json: %s", raw)
	}
}

// processesOf lists running processes whose executable is one of paths.
func processesOf(paths ...string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		for _, p := range paths {
			if exe == p {
				found = append(found, e.Name()+" "+exe)
			}
		}
	}
	return found
}

// runBench runs the bench binary with args (plus -bin and -json) within
// limit, logs its table, checks that it left no process behind, and returns
// the JSON it wrote.
func runBench(t *testing.T, bench, bin, jsonPath string, limit time.Duration, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bench, append(args, "-bin", bin, "-json", jsonPath)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	t.Logf("table:\n%s", stdout.String())
	if runErr != nil {
		t.Fatalf("bench %v: %v\nstderr:\n%s", args, runErr, stderr.String())
	}
	if left := processesOf(bin, bench); len(left) > 0 {
		t.Errorf("processes left after the bench: %v", left)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

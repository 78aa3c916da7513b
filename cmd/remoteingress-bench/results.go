package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// rowDef is one line of the table: a number measured for some set-ups.
type rowDef struct {
	Key      string   `json:"key"`
	Label    string   `json:"label"`
	Unit     string   `json:"unit"`
	Better   string   `json:"better"` // "higher", "lower" or "equal"
	decimals int      // in the table
	modes    []string // the set-ups it applies to; nil: direct, relay and tunnel
	quic     bool     // and tunnel-quic (one of quicRows)
}

// applies reports whether the row is measured for mode.
func (d rowDef) applies(mode string) bool {
	if mode == modeTunnelQUIC {
		return d.quic
	}
	if d.modes == nil {
		return true
	}
	for _, m := range d.modes {
		if m == mode {
			return true
		}
	}
	return false
}

// rowDefs lists the table's rows in order.
func rowDefs(cfg config) []rowDef {
	procs := []string{modeRelay, modeTunnel}
	tun := []string{modeTunnel}
	defs := []rowDef{
		{Key: "throughput_1_up_gbps", Label: "throughput, 1 stream, client→target", Unit: "Gbit/s", Better: "higher", decimals: 2, quic: true},
		{Key: "throughput_1_down_gbps", Label: "throughput, 1 stream, target→client", Unit: "Gbit/s", Better: "higher", decimals: 2, quic: true},
		{Key: "throughput_n_up_gbps", Label: fmt.Sprintf("throughput, %d streams, client→target", cfg.Streams), Unit: "Gbit/s", Better: "higher", decimals: 2, quic: true},
		{Key: "throughput_n_up_set_gbps", Label: fmt.Sprintf("throughput, %d streams, tunnelConnections %d", cfg.Streams, cfg.SetConns), Unit: "Gbit/s", Better: "higher", decimals: 2},
		{Key: "cpu_seconds_per_gb", Label: "CPU per GB, 1 stream c→t (own processes)", Unit: "s/GB", Better: "lower", decimals: 2, modes: procs, quic: true},
		{Key: "latency_1_p50_us", Label: "latency, 1 connection, p50", Unit: "µs", Better: "lower", decimals: 1, quic: true},
		{Key: "latency_1_p99_us", Label: "latency, 1 connection, p99", Unit: "µs", Better: "lower", decimals: 1, quic: true},
		{Key: "latency_n_p50_us", Label: fmt.Sprintf("latency, %d connections, p50", cfg.LatencyConns), Unit: "µs", Better: "lower", decimals: 0, quic: true},
		{Key: "latency_n_p99_us", Label: fmt.Sprintf("latency, %d connections, p99", cfg.LatencyConns), Unit: "µs", Better: "lower", decimals: 0, quic: true},
		{Key: "latency_n_rate", Label: fmt.Sprintf("latency, %d connections, round trips", cfg.LatencyConns), Unit: "rt/s", Better: "higher", decimals: 0, quic: true},
		{Key: "conn_rate", Label: fmt.Sprintf("connection rate, %d workers", cfg.Workers), Unit: "conn/s", Better: "higher", decimals: 0, quic: true},
		{Key: "port_change_p50_ms", Label: fmt.Sprintf("port change → accepting, p50 of %d", cfg.PortChanges), Unit: "ms", Better: "lower", decimals: 2, modes: tun},
		{Key: "port_change_p90_ms", Label: fmt.Sprintf("port change → accepting, p90 of %d", cfg.PortChanges), Unit: "ms", Better: "lower", decimals: 2, modes: tun},
		{Key: "port_change_max_ms", Label: fmt.Sprintf("port change → accepting, max of %d", cfg.PortChanges), Unit: "ms", Better: "lower", decimals: 2, modes: tun},
		{Key: "port_change_removed_refused", Label: fmt.Sprintf("port change, removed ports refusing (of %d)", cfg.PortChanges), Unit: "ports", Better: "equal", decimals: 0, modes: tun},
	}
	for _, be := range []string{"auto", "process"} {
		defs = append(defs,
			rowDef{Key: "fw_" + be + "_conn_rate_without", Label: fwLabel(be, "", "conn_rate_without", cfg.FwCIDRs), Unit: "conn/s", Better: "higher", decimals: 0, modes: tun},
			rowDef{Key: "fw_" + be + "_conn_rate_with", Label: fwLabel(be, "", "conn_rate_with", cfg.FwCIDRs), Unit: "conn/s", Better: "higher", decimals: 0, modes: tun},
			rowDef{Key: "fw_" + be + "_ratio", Label: fwLabel(be, "", "ratio", cfg.FwCIDRs), Unit: "ratio", Better: "higher", decimals: 3, modes: tun},
			rowDef{Key: "fw_" + be + "_ratio_median", Label: fwLabel(be, "", "ratio_median", cfg.FwCIDRs), Unit: "ratio", Better: "higher", decimals: 3, modes: tun},
			rowDef{Key: "fw_" + be + "_cpu_ratio", Label: fwLabel(be, "", "cpu_ratio", cfg.FwCIDRs), Unit: "ratio", Better: "lower", decimals: 3, modes: tun},
			rowDef{Key: "fw_" + be + "_cpu_all_ratio", Label: fwLabel(be, "", "cpu_all_ratio", cfg.FwCIDRs), Unit: "ratio", Better: "lower", decimals: 3, modes: tun},
		)
	}
	defs = append(defs,
		rowDef{Key: "hubs_conn_rate_one", Label: "hubs: conn rate, one hub", Unit: "conn/s", Better: "higher", decimals: 0, modes: tun},
		rowDef{Key: "hubs_conn_rate_two", Label: "hubs: conn rate, two hubs (spread)", Unit: "conn/s", Better: "higher", decimals: 0, modes: tun},
		rowDef{Key: "hubs_conn_rate_ratio", Label: "hubs: conn rate, two/one", Unit: "ratio", Better: "higher", decimals: 3, modes: tun},
		rowDef{Key: "hubs_conn_busier_pct", Label: "hubs: conn rate, busier hub's streams", Unit: "%", Better: "lower", decimals: 1, modes: tun},
		rowDef{Key: "hubs_streams_one_gbps", Label: fmt.Sprintf("hubs: %d streams, one hub", cfg.Streams), Unit: "Gbit/s", Better: "higher", decimals: 2, modes: tun},
		rowDef{Key: "hubs_streams_two_gbps", Label: fmt.Sprintf("hubs: %d streams, two hubs (spread)", cfg.Streams), Unit: "Gbit/s", Better: "higher", decimals: 2, modes: tun},
		rowDef{Key: "hubs_streams_ratio", Label: fmt.Sprintf("hubs: %d streams, two/one", cfg.Streams), Unit: "ratio", Better: "higher", decimals: 3, modes: tun},
		rowDef{Key: "hubs_streams_busier_pct", Label: fmt.Sprintf("hubs: %d streams, busier hub's streams", cfg.Streams), Unit: "%", Better: "lower", decimals: 1, modes: tun},
		rowDef{Key: "hubs_kill_notice_ms", Label: "hubs: kill -9 → tunnelDisconnected", Unit: "ms", Better: "lower", decimals: 2, modes: tun},
		rowDef{Key: "hubs_kill_inflight", Label: "hubs: kill -9, conns in flight (both hubs)", Unit: "conns", Better: "equal", decimals: 0, modes: tun},
		rowDef{Key: "hubs_kill_failed", Label: "hubs: kill -9, failed conns", Unit: "conns", Better: "lower", decimals: 0, modes: tun},
		rowDef{Key: "hubs_restart_connected_ms", Label: "hubs: restarted hub → tunnelConnected", Unit: "ms", Better: "lower", decimals: 0, modes: tun},
		rowDef{Key: "hubs_stop_failed", Label: "hubs: stopHub, failed conns", Unit: "conns", Better: "equal", decimals: 0, modes: tun},
	)
	defs = append(defs,
		rowDef{Key: "rss_idle_mib", Label: "memory, RSS idle", Unit: "MiB", Better: "lower", decimals: 1, modes: procs, quic: true},
	)
	if cfg.SetConns <= 0 {
		defs = slices.DeleteFunc(defs, func(d rowDef) bool { return d.Key == "throughput_n_up_set_gbps" })
	}
	for _, n := range cfg.MemLevels {
		defs = append(defs, rowDef{Key: fmt.Sprintf("rss_%d_mib", n), Label: fmt.Sprintf("memory, RSS holding %d connections", n), Unit: "MiB", Better: "lower", decimals: 1, modes: procs})
	}
	for _, n := range cfg.MemLevels[:len(cfg.MemLevels)-1] {
		defs = append(defs, rowDef{Key: fmt.Sprintf("mem_kib_per_conn_%d", n), Label: fmt.Sprintf("memory per connection (at %d)", n), Unit: "KiB", Better: "lower", decimals: 1, modes: procs})
	}
	top := cfg.MemLevels[len(cfg.MemLevels)-1]
	defs = append(defs,
		rowDef{Key: "mem_conns_reached", Label: "memory, connections reached", Unit: "conns", Better: "higher", decimals: 0, modes: procs},
		rowDef{Key: "mem_kib_per_conn", Label: fmt.Sprintf("memory per connection (at %d)", top), Unit: "KiB", Better: "lower", decimals: 1, modes: procs},
		rowDef{Key: "fair_bulk_ratio", Label: "fairness, bulk beside stalled / alone", Unit: "ratio", Better: "higher", decimals: 2},
		rowDef{Key: "fair_inflight_kib", Label: "fairness, bytes in flight for stalled", Unit: "KiB", Better: "lower", decimals: 0},
		rowDef{Key: "events_connections", Label: "events, connections made (conn-rate row)", Unit: "conns", Better: "equal", decimals: 0, modes: tun},
		rowDef{Key: "events_stream_opened", Label: "events, streamOpened received", Unit: "events", Better: "equal", decimals: 0, modes: tun},
		rowDef{Key: "events_stream_closed", Label: "events, streamClosed received", Unit: "events", Better: "equal", decimals: 0, modes: tun},
	)
	defs = append(defs, udpRowDefs()...)
	return defs
}

// results collects the numbers and the details behind them.
type results struct {
	mu       sync.Mutex
	vals     map[string]map[string]float64 // key → mode → value
	details  map[string]map[string]any     // mode → name → anything
	problems []string
	envNotes []string
	labels   map[string]string // a row's label found while measuring
}

func newResults() *results {
	return &results{vals: map[string]map[string]float64{}, details: map[string]map[string]any{}, labels: map[string]string{}}
}

// label replaces a row's label with one that says what was measured.
func (r *results) label(key, label string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.labels[key] = label
}

// withLabels returns defs with the labels found while measuring.
func (r *results) withLabels(defs []rowDef) []rowDef {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, d := range defs {
		if l, ok := r.labels[d.Key]; ok {
			defs[i].Label = l
		}
	}
	return defs
}

// set records a row's value for a mode.
func (r *results) set(key, mode string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.vals[key] == nil {
		r.vals[key] = map[string]float64{}
	}
	r.vals[key][mode] = v
}

// get returns a row's value for a mode.
func (r *results) get(key, mode string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.vals[key][mode]
	return v, ok
}

// detail records raw data behind a mode's numbers.
func (r *results) detail(mode, name string, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.details[mode] == nil {
		r.details[mode] = map[string]any{}
	}
	r.details[mode][name] = v
}

// problem records something that went wrong or looked wrong.
func (r *results) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// note records a fact about the environment that shaped the numbers.
func (r *results) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.envNotes = append(r.envNotes, fmt.Sprintf(format, args...))
}

// percentiles returns p50 and p99 of ds in microseconds (ds is sorted).
func percentiles(ds []time.Duration) (p50, p99 float64) {
	if len(ds) == 0 {
		return 0, 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(ds)))) - 1
		i = max(0, min(i, len(ds)-1))
		return float64(ds[i]) / float64(time.Microsecond)
	}
	return at(0.50), at(0.99)
}

// gbps is bytes over d in Gbit/s.
func gbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / d.Seconds() / 1e9
}

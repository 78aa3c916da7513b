package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mode names, in the order of the table's columns.
const (
	modeDirect = "direct"
	modeRelay  = "relay"
	modeTunnel = "tunnel"
	// modeTunnelQUIC is the tunnel with the edge's startEdge transport
	// "quic"; it is measured in the quicRows only, in a column of its own.
	modeTunnelQUIC = "tunnel-quic"
	// modeTunnelSet is the tunnel with an edge over several TLS connections;
	// it is measured in the N-stream row only, reported in the tunnel column.
	modeTunnelSet = "tunnel-set"
	// modeTunnelHubs is the tunnel whose edge spreads over two hub
	// processes; it is measured in the several-hubs row only.
	modeTunnelHubs = "tunnel-2hubs"
)

// allModes are the set-ups of the table's columns: every row is measured on
// the first three, the rows of quicRows on tunnel-quic too.
var allModes = []string{modeDirect, modeRelay, modeTunnel, modeTunnelQUIC}

// quicRows are the rows (-rows keys) measured on tunnel-quic as well.
var quicRows = []string{"up1", "down1", "streams", "latency1", "latencyN", "connrate"}

// allUDPParts are the parts of the udp row -udp-parts can choose.
var allUDPParts = []string{"rtt", "flows", "rate", "offered", "fair"}

// allRows are the keys of the rows -rows can choose, in the table's order.
var allRows = []string{"memory", "up1", "down1", "streams", "latency1", "latencyN", "connrate", "portchange", "firewall", "hubs", "fairness", "udp", "udpmemory"}

// config is what the flags choose.
type config struct {
	Bin            string        `json:"bin"`
	JSONPath       string        `json:"jsonPath"`
	Quick          bool          `json:"quick"`
	Duration       time.Duration `json:"bulkDurationNs"`
	LatencyRT      int           `json:"latencyRoundTrips"`
	LatencyConns   int           `json:"latencyConns"`
	LatencyDur     time.Duration `json:"latencyManyDurationNs"`
	Conns          int           `json:"connRateConnections"`
	Workers        int           `json:"workers"`
	Streams        int           `json:"streams"`
	MemLevels      []int         `json:"memoryLevels"`
	Modes          []string      `json:"modes"`
	Rows           []string      `json:"rows"`
	SetConns       int           `json:"tunnelSetConnections"`
	MetricsAB      bool          `json:"metricsAB"`
	ABRounds       int           `json:"abRounds"`
	ABOffBin       string        `json:"abOffBin"`
	ScrapeInterval time.Duration `json:"scrapeIntervalNs"`
	PortChanges    int           `json:"portChanges"`
	FwCIDRs        int           `json:"firewallBlockedCIDRs"`
	FwRounds       int           `json:"firewallRounds"`
	FwConns        int           `json:"firewallConnections"`
	HubsRounds     int           `json:"hubsRounds"`
	HubsLoad       int           `json:"hubsLoadClients"`
	HubsLoadDur    time.Duration `json:"hubsLoadPhaseNs"`
	UDPParts       []string      `json:"udpParts"`
	// UDPTargetRcvbuf is the UDP target's receive buffer (0: the kernel's).
	UDPTargetRcvbuf int  `json:"udpTargetRcvbuf"`
	Verbose         bool `json:"-"`
}

// usageText follows the flag list in -h.
const usageText = `usage: remoteingress-bench [flags]

Runs direct, TLS relay and tunnel (hub + edge processes of -bin) on loopback,
and on the throughput, latency and connection-rate rows the tunnel over QUIC
(tunnel-quic: the same, the edge's startEdge transport "quic"); prints a
table and writes -json. A full run takes about five minutes on 2 cores;
-quick is a smoke run of about half a minute.

flags:
`

// parseFlags reads the command line; -quick changes the defaults of the
// size flags, explicit flags win.
func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("remoteingress-bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bin := fs.String("bin", "dist_bin/remoteingress-bin", "the remoteingress-bin binary to measure")
	jsonPath := fs.String("json", "bench.json", "where to write every number")
	quick := fs.Bool("quick", false, "smoke run (~30 s): shorter transfers, fewer round trips and connections")
	dur := fs.Duration("duration", 5*time.Second, "length of each bulk transfer (quick: 1s)")
	rt := fs.Int("latency-rt", 20000, "round trips of the 1-connection latency row (quick: 2000)")
	lconns := fs.Int("latency-conns", 100, "connections of the many-connection latency row")
	ldur := fs.Duration("latency-dur", 3*time.Second, "length of the many-connection latency row (quick: 1s)")
	conns := fs.Int("conns", 5000, "connections of the connection-rate row (quick: 500)")
	workers := fs.Int("workers", 8, "concurrent workers opening connections")
	streams := fs.Int("streams", 8, "streams of the aggregate throughput row")
	mem := fs.String("mem", "1000,10000", "idle connections held for the memory row, ascending (quick: 100,1000)")
	modes := fs.String("modes", strings.Join(allModes, ","), "set-ups to measure")
	setConns := fs.Int("tunnel-connections", 1, "the N-stream row is measured once more on a tunnel whose edge uses this many TLS connections (startEdge tunnelConnections; the other rows use the binary's default); 0 skips it")
	rows := fs.String("rows", strings.Join(allRows, ","), "rows to measure, for profiling one of them")
	metricsAB := fs.Bool("metrics-ab", false, "instead of the table: two tunnels, metricsListen off and on (scraped), measured in alternating ABBA rounds on the rows up1, streams and connrate")
	abRounds := fs.Int("ab-rounds", 6, "rounds per set-up of each -metrics-ab row (quick: 2)")
	abOffBin := fs.String("ab-off-bin", "", "the binary of -metrics-ab's metrics-off set-up (default -bin): a build without the engine's counters measures their cost too")
	scrape := fs.Duration("scrape-interval", time.Second, "how often -metrics-ab scrapes the hub's and the edge's /metrics")
	portChanges := fs.Int("port-changes", 20, "hub-assigned port changes of the port-change row (quick: 3)")
	fwCIDRs := fs.Int("fw-cidrs", 10000, "blocked CIDRs of the firewall row (quick: 2000)")
	fwRounds := fs.Int("fw-rounds", 12, "rounds of the firewall row, each measuring the connection rate without and with the blocked CIDRs, for each backend (quick: 1)")
	fwConns := fs.Int("fw-conns", 2000, "connections of each measurement of the firewall row (quick: 300)")
	hubsRounds := fs.Int("hubs-rounds", 4, "alternating rounds of the several-hubs row's connection rate and N-stream throughput, one hub against two (quick: 1)")
	hubsLoad := fs.Int("hubs-load", 4, "client goroutines of the several-hubs failover load, each doing connect, one round trip, close, every 5 ms")
	hubsLoadDur := fs.Duration("hubs-load-phase", 2*time.Second, "length of each phase of the failover load: before the kill, after the edge noticed, after the restart, around the stopHub (quick: 500ms)")
	udpParts := fs.String("udp-parts", strings.Join(allUDPParts, ","), "parts of the udp row to measure: rtt (round trip, 1200 and 64 B), flows (50 flows' round trips), rate (≤ 1% loss), offered (delivered of 100k/s, CPU per GB), fair (TCP beside a flood)")
	udpRcvbuf := fs.Int("udp-target-rcvbuf", 8<<20, "receive buffer of the UDP rows' target, in bytes (0: the kernel's default, as a target that sets none has)")
	verbose := fs.Bool("v", false, "also print the children's stderr warnings as they happen (progress always goes to stderr)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(os.Stderr, usageText)
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
			os.Exit(0)
		}
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["duration"] {
			*dur = time.Second
		}
		if !set["latency-rt"] {
			*rt = 2000
		}
		if !set["latency-dur"] {
			*ldur = time.Second
		}
		if !set["conns"] {
			*conns = 500
		}
		if !set["mem"] {
			*mem = "100,1000"
		}
		if !set["ab-rounds"] {
			*abRounds = 2
		}
		if !set["port-changes"] {
			*portChanges = 3
		}
		if !set["fw-cidrs"] {
			*fwCIDRs = 2000
		}
		if !set["fw-rounds"] {
			*fwRounds = 1
		}
		if !set["fw-conns"] {
			*fwConns = 300
		}
		if !set["hubs-rounds"] {
			*hubsRounds = 1
		}
		if !set["hubs-load-phase"] {
			*hubsLoadDur = 500 * time.Millisecond
		}
	}
	cfg := config{
		Bin: *bin, JSONPath: *jsonPath, Quick: *quick, Duration: *dur,
		LatencyRT: *rt, LatencyConns: *lconns, LatencyDur: *ldur, Conns: *conns,
		Workers: *workers, Streams: *streams, Verbose: *verbose, SetConns: *setConns,
		MetricsAB: *metricsAB, ABRounds: *abRounds, ABOffBin: *abOffBin, ScrapeInterval: *scrape,
		PortChanges: *portChanges, FwCIDRs: *fwCIDRs, FwRounds: *fwRounds, FwConns: *fwConns,
		HubsRounds: *hubsRounds, HubsLoad: *hubsLoad, HubsLoadDur: *hubsLoadDur, UDPTargetRcvbuf: *udpRcvbuf,
	}
	if cfg.UDPTargetRcvbuf < 0 {
		return config{}, fmt.Errorf("-udp-target-rcvbuf wants 0 or a size in bytes, got %d", cfg.UDPTargetRcvbuf)
	}
	for _, f := range strings.Split(*mem, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(cfg.MemLevels) > 0 && n <= cfg.MemLevels[len(cfg.MemLevels)-1]) {
			return config{}, fmt.Errorf("-mem wants ascending positive counts, got %q", *mem)
		}
		cfg.MemLevels = append(cfg.MemLevels, n)
	}
	chosen := strings.Split(*modes, ",")
	for i, m := range chosen {
		chosen[i] = strings.TrimSpace(m)
		if !slices.Contains(allModes, chosen[i]) {
			return config{}, fmt.Errorf("-modes: unknown mode %q (want some of %s)", m, strings.Join(allModes, ","))
		}
	}
	for _, m := range allModes { // in the table's order
		if slices.Contains(chosen, m) {
			cfg.Modes = append(cfg.Modes, m)
		}
	}
	for _, p := range strings.Split(*udpParts, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(allUDPParts, p) {
			return config{}, fmt.Errorf("-udp-parts: unknown part %q (want some of %s)", p, strings.Join(allUDPParts, ","))
		}
		cfg.UDPParts = append(cfg.UDPParts, p)
	}
	for _, r := range strings.Split(*rows, ",") {
		r = strings.TrimSpace(r)
		if !slices.Contains(allRows, r) {
			return config{}, fmt.Errorf("-rows: unknown row %q (want some of %s)", r, strings.Join(allRows, ","))
		}
		cfg.Rows = append(cfg.Rows, r)
	}
	if cfg.Duration <= 0 || cfg.LatencyRT <= 0 || cfg.LatencyConns <= 0 || cfg.LatencyDur <= 0 ||
		cfg.Conns <= 0 || cfg.Workers <= 0 || cfg.Streams <= 0 || cfg.SetConns < 0 || cfg.SetConns > 16 ||
		cfg.ABRounds <= 0 || cfg.ScrapeInterval <= 0 || cfg.PortChanges <= 0 || cfg.FwCIDRs <= 0 || cfg.FwRounds <= 0 || cfg.FwConns <= 0 ||
		cfg.HubsRounds <= 0 || cfg.HubsLoad <= 0 || cfg.HubsLoadDur <= 0 {
		return config{}, errors.New("sizes and durations must be positive")
	}
	return cfg, nil
}

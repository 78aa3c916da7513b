package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
)

// bench is one run: the set-ups, the targets and the results.
type bench struct {
	ctx     context.Context
	cfg     config
	kids    *children
	started time.Time
	mach    machine
	nofile  syscall.Rlimit
	tmpdir  string

	targets []*target
	modes   []*mode
	setMode *mode // the tunnel over cfg.SetConns connections, for the N-stream row
	fwMode  *mode // the tunnel whose edge runs firewallBackend "process", for the firewall row
	hubMode *mode // the tunnel whose edge spreads over two hubs, for the several-hubs row
	res     *results

	children []stopInfo
	events   map[string]eventSummary
	latency  map[string]*latencyAcc // the latency rows' samples, by row/mode
	bulk     map[string]*bulkAcc    // the throughput rows' totals, by row/mode
	stderr   map[string][]string
	final    map[string]any
	err      error
}

func newBench(ctx context.Context, cfg config, kids *children) *bench {
	return &bench{ctx: ctx, cfg: cfg, kids: kids, started: time.Now(), mach: readMachine(), res: newResults()}
}

// logf prints progress on stderr (stdout is for the table).
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

// step is one row's measurement for one set-up.
type step func(m *mode) error

// runAll sets everything up and measures every row on every set-up, one row
// at a time across the set-ups so they see the same machine conditions.
func (b *bench) runAll() error {
	if err := b.setup(); err != nil {
		return fmt.Errorf("set-up: %w", err)
	}
	// The latency rows are measured in rounds that alternate between the
	// set-ups: on a shared machine a single round trip's cost depends on
	// where the scheduler happens to put the processes, which changes over
	// seconds. The memory row comes last: holding 10 000 connections leaves
	// processes with large heaps that would slow the rows after it.
	rows := []struct {
		key, name string
		fn        step
		rounds    int
	}{
		{"up1", "throughput, 1 stream, client→target (+CPU)", b.measureUp1, throughputRounds},
		{"down1", "throughput, 1 stream, target→client", b.measureDown1, throughputRounds},
		{"streams", fmt.Sprintf("throughput, %d streams", b.cfg.Streams), b.measureUpN, throughputRounds},
		{"latency1", "latency, 1 connection", b.measureLatency1, latencyRounds},
		{"latencyN", fmt.Sprintf("latency, %d connections", b.cfg.LatencyConns), b.measureLatencyN, latencyRounds},
		{"connrate", "connection rate (+events)", b.measureConnRate, 1},
		{"portchange", "port change latency", b.measurePortChange, 1},
		{"firewall", "firewall cost on the connection rate", b.measureFirewall, 1},
		{"hubs", "several hubs: spread over two, failover", b.measureHubs, 1},
		{"fairness", "fairness", b.measureFairness, 1},
		{"udp", "UDP: round trip, rate, beside TCP (own set-ups)", b.measureUDP, 1},
		{"udpmemory", "UDP: memory per idle flow (fresh processes)", b.measureUDPMemory, 1},
		{"memory", "memory", b.measureMemory, 1},
	}
	for _, r := range rows {
		if !slices.Contains(b.cfg.Rows, r.key) {
			continue
		}
		modes := b.modes
		switch r.key {
		case "streams":
			modes = slices.Clip(b.modes)
			if b.setMode != nil {
				modes = append(modes, b.setMode) // the extra tunnel is measured in this row only
			}
		case "portchange", "firewall", "hubs", "udp", "udpmemory": // the tunnel's own features (udp*: set-ups of their own)
			modes = slices.DeleteFunc(slices.Clone(b.modes), func(m *mode) bool { return m.hub == nil })
		}
		if !slices.Contains(quicRows, r.key) { // tunnel-quic is measured in its rows only
			modes = slices.DeleteFunc(slices.Clone(modes), func(m *mode) bool { return m.name == modeTunnelQUIC })
		}
		for round := 1; round <= r.rounds; round++ {
			for _, m := range modes {
				if err := b.ctx.Err(); err != nil {
					return err
				}
				if r.rounds > 1 {
					b.logf("%-45s %s (round %d of %d)", r.name, m.name, round, r.rounds)
				} else {
					b.logf("%-45s %s", r.name, m.name)
				}
				if err := r.fn(m); err != nil {
					if b.ctx.Err() != nil {
						return b.ctx.Err()
					}
					b.res.problem("%s, %s: %v", r.name, m.name, err)
					b.logf("  failed: %v", err)
				}
				if err := m.settle(20 * time.Second); err != nil {
					b.res.problem("after %s, %s: %v", r.name, m.name, err)
					b.logf("  %v", err)
				}
			}
		}
	}
	b.checkFinal()
	return nil
}

// setup raises the descriptor limit, starts the targets and the set-ups,
// and records the idle RSS of the fresh processes.
func (b *bench) setup() error {
	lim, err := raiseNofile()
	b.nofile = lim
	if err != nil {
		b.res.problem("raising RLIMIT_NOFILE: %v (soft %d, hard %d)", err, lim.Cur, lim.Max)
	}
	if lim.Max < wantNofile {
		b.res.note("RLIMIT_NOFILE: the hard limit is %d and could not be raised to %d here (no CAP_SYS_RESOURCE); the bench and its children run with %d", lim.Max, wantNofile, lim.Cur)
	}
	if _, err := os.Stat(b.cfg.Bin); err != nil && (slices.Contains(b.cfg.Modes, modeTunnel) || slices.Contains(b.cfg.Modes, modeTunnelQUIC)) {
		return fmt.Errorf("binary %s: %w (run make build, or pass -bin)", b.cfg.Bin, err)
	}
	b.tmpdir, err = os.MkdirTemp("", "remoteingress-bench-")
	if err != nil {
		return err
	}
	plain, err := listenTarget("127.0.0.2:0", false)
	if err != nil {
		return err
	}
	b.targets = append(b.targets, plain)
	for _, name := range b.cfg.Modes {
		var m *mode
		switch name {
		case modeDirect:
			m = setupDirect(plain)
		case modeRelay:
			if m, err = setupRelay(b.kids, b.tmpdir, plain); err != nil {
				return fmt.Errorf("relay: %w", err)
			}
		case modeTunnel:
			if m, err = setupTunnel(b.kids, b.cfg.Bin, modeTunnel, "", 0, false, nil); err != nil {
				return fmt.Errorf("tunnel: %w", err)
			}
			b.targets = append(b.targets, m.tgt)
			b.mach.BinVersion = m.hub.version
		case modeTunnelQUIC:
			if !slices.ContainsFunc(b.cfg.Rows, func(r string) bool { return slices.Contains(quicRows, r) || r == "udp" }) {
				continue // none of its rows chosen (udp: on a set-up of its own, beside this one)
			}
			if m, err = setupTunnel(b.kids, b.cfg.Bin, modeTunnelQUIC, "-quic", 0, false, map[string]any{"transport": "quic"}); err != nil {
				return fmt.Errorf("tunnel over QUIC: %w", err)
			}
			b.targets = append(b.targets, m.tgt)
			if err := m.checkTransport("quic"); err != nil {
				return fmt.Errorf("tunnel over QUIC: %w", err)
			}
			b.mach.BinVersion = m.hub.version
		}
		for _, p := range m.procs {
			if b.cfg.Verbose {
				p.stderr.setNotice(func(s string) { b.logf("  %s", s) })
			}
			if n, err := openFilesLimit(p.pid()); err == nil {
				m.info[p.name+"OpenFilesLimit"] = n
			}
		}
		b.modes = append(b.modes, m)
		b.logf("%-7s ready: clients connect to %s", m.name, m.addr)
	}
	if b.cfg.SetConns > 0 && slices.Contains(b.cfg.Modes, modeTunnel) && slices.Contains(b.cfg.Rows, "streams") {
		m, err := setupTunnel(b.kids, b.cfg.Bin, modeTunnelSet, "-set", b.cfg.SetConns, false, nil)
		if err != nil {
			return fmt.Errorf("tunnel over %d connections: %w", b.cfg.SetConns, err)
		}
		b.targets = append(b.targets, m.tgt)
		b.setMode = m
		b.logf("%-7s ready: clients connect to %s (%d tunnel connections)", m.name, m.addr, b.cfg.SetConns)
	}
	if slices.Contains(b.cfg.Modes, modeTunnel) && slices.Contains(b.cfg.Rows, "firewall") {
		m, err := setupTunnel(b.kids, b.cfg.Bin, modeTunnelFwProc, "-fwproc", 0, false, map[string]any{"firewallBackend": "process"})
		if err != nil {
			return fmt.Errorf("tunnel with firewallBackend process: %w", err)
		}
		b.targets = append(b.targets, m.tgt)
		b.fwMode = m
		b.logf("%-7s ready: clients connect to %s (firewallBackend process)", m.name, m.addr)
	}
	if slices.Contains(b.cfg.Modes, modeTunnel) && slices.Contains(b.cfg.Rows, "hubs") {
		m, err := setupTunnelHubs(b.kids, b.cfg.Bin, modeTunnelHubs, "-hubs", 2, 0, false, map[string]any{"hubMode": "spread"})
		if err != nil {
			return fmt.Errorf("tunnel over two hubs: %w", err)
		}
		b.targets = append(b.targets, m.tgt)
		b.hubMode = m
		b.logf("%-7s ready: clients connect to %s (hubs %v, spread)", m.name, m.addr, m.hubAddrs)
	}
	time.Sleep(time.Second) // let the fresh processes reach their idle state
	for _, m := range b.modes {
		if len(m.procs) == 0 {
			continue
		}
		sum, each, err := m.rssKiB()
		if err != nil {
			return err
		}
		m.idleKiB = sum
		b.res.set("rss_idle_mib", m.name, float64(sum)/1024)
		b.res.detail(m.name, "rssIdleKiB", each)
	}
	return nil
}

// checkFinal reads the tunnel's statuses at the end: dropped events, streams
// left, target-side errors.
func (b *bench) checkFinal() {
	b.final = map[string]any{}
	for _, m := range b.setups() {
		if h := m.tgt.headerErrors.Load(); h > 0 {
			b.res.problem("%s: %d connections reached the target with a bad or missing PROXY header (last: %s)", m.name, h, m.tgt.lastError)
		}
		if m.hub == nil {
			continue
		}
		for _, p := range append(slices.Clone(m.hubs), m.edge) {
			method := "getHubStatus"
			if p == m.edge {
				method = "getEdgeStatus"
			}
			raw, err := p.call(method, map[string]any{}, 10*time.Second)
			if err != nil {
				b.res.problem("%s: %v", method, err)
				continue
			}
			var st map[string]any
			if err := json.Unmarshal(raw, &st); err != nil {
				b.res.problem("%s: %v", method, err)
				continue
			}
			b.final[p.label] = st
			if d, ok := st["eventsDropped"].(float64); ok && d > 0 {
				b.res.problem("%s dropped %.0f events (%s eventsDropped)", p.label, d, method)
			}
		}
	}
}

// stopSetups stops the tunnel the way a user would (stopEdge, stopHub over
// the management dialect) before the processes are ended by closing their
// stdin, and records how long that took.
func (b *bench) stopSetups() {
	for _, m := range b.setups() {
		if m.hub == nil || b.ctx.Err() != nil {
			continue
		}
		stops := map[string]float64{}
		type stopCall struct {
			p      *mgmt
			method string
		}
		calls := []stopCall{{m.edge, "stopEdge"}}
		for _, h := range m.hubs {
			calls = append(calls, stopCall{h, "stopHub"})
		}
		for i, s := range calls {
			t0 := time.Now()
			if _, err := s.p.call(s.method, map[string]any{}, 10*time.Second); err != nil {
				b.res.problem("%s: %v", s.method, err)
				continue
			}
			key := s.method + "Seconds"
			if len(m.hubs) > 1 && i > 0 {
				key = s.p.label + "StopHubSeconds"
			}
			stops[key] = time.Since(t0).Seconds()
		}
		time.Sleep(200 * time.Millisecond) // the disconnect events
		b.res.detail(m.name, "stop", stops)
	}
}

// close stops the targets and removes the temporary directory.
func (b *bench) close() {
	for _, t := range b.targets {
		t.close()
	}
	if b.tmpdir != "" {
		os.RemoveAll(b.tmpdir)
	}
}

// finish records how the children ended and what they logged.
func (b *bench) finish(infos []stopInfo, err error) {
	b.err = err
	b.mach.LoadEnd = loadavg()
	b.children = infos
	b.events = map[string]eventSummary{}
	b.stderr = map[string][]string{}
	for _, m := range b.setups() {
		if m.hub != nil {
			for _, h := range m.allHubs {
				b.events[h.label] = h.summary()
			}
			b.events[m.edge.label] = m.edge.summary()
		}
		for _, p := range m.procs {
			if lines := p.stderr.notableLines(); len(lines) > 0 {
				b.stderr[p.name] = lines
			}
		}
	}
	for _, ci := range infos {
		if ci.KilledByBench {
			continue // killed on purpose
		}
		if ci.Killed {
			b.res.problem("%s (pid %d) did not exit within 5 s of its stdin closing and 3 s of SIGTERM; killed", ci.Name, ci.Pid)
		} else if ci.ExitCode != 0 {
			b.res.problem("%s (pid %d) exited with code %d %s", ci.Name, ci.Pid, ci.ExitCode, ci.Signal)
		}
		if ci.Warnings+ci.Errors > 0 {
			b.res.problem("%s logged %d warnings and %d errors on stderr (first: %s)", ci.Name, ci.Warnings, ci.Errors, firstOf(b.stderr[ci.Name]))
		}
	}
}

func firstOf(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[0]
}

// setups returns every set-up: the table's columns and the extra tunnel.
func (b *bench) setups() []*mode {
	all := slices.Clip(b.modes)
	for _, m := range []*mode{b.setMode, b.fwMode, b.hubMode} {
		if m != nil {
			all = append(all, m)
		}
	}
	return all
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// jsonRow is a row of bench.json: a value per set-up (null where the row
// does not apply or the measurement failed) and tunnel/relay.
type jsonRow struct {
	rowDef
	Values         map[string]*float64 `json:"values"`
	TunnelPerRelay *float64            `json:"tunnelPerRelay"`
	QUICPerRelay   *float64            `json:"quicPerRelay"`  // tunnel-quic/relay
	QUICPerTunnel  *float64            `json:"quicPerTunnel"` // tunnel-quic/tunnel (QUIC over TLS)
	AppliesTo      []string            `json:"appliesTo"`
}

// jsonReport is the whole of bench.json.
type jsonReport struct {
	Machine         machine                   `json:"machine"`
	Config          config                    `json:"config"`
	NofileSoft      uint64                    `json:"rlimitNofileSoft"`
	NofileHard      uint64                    `json:"rlimitNofileHard"`
	DurationSeconds float64                   `json:"durationSeconds"`
	Setup           map[string]map[string]any `json:"setup"`
	Rows            []jsonRow                 `json:"rows"`
	Details         map[string]map[string]any `json:"details"`
	Events          map[string]eventSummary   `json:"events"`
	FinalStatus     map[string]any            `json:"finalStatus"`
	Children        []stopInfo                `json:"children"`
	ChildStderr     map[string][]string       `json:"childStderr"`
	Problems        []string                  `json:"problems"`
	Notes           []string                  `json:"notes"`
	Environment     []string                  `json:"environmentNotes"`
	Error           string                    `json:"error,omitempty"`
	Target          map[string]map[string]any `json:"target"`
}

// notes explain how the numbers were taken.
var notes = []string{
	"All the set-ups run on loopback in one pass; each row is measured on direct, relay and tunnel (and tunnel-quic, in its rows) in turn. The client and the target run in the bench process and share the machine's cores with the set-up under test.",
	"direct: client → target. relay: client → relay-in (plain TCP) → new TLS 1.3 connection per client connection → relay-out → target, io.Copy both ways with half-close. tunnel: client → edge process → one TLS tunnel → hub process → target, driven over --management.",
	"tunnel-quic: the same hub and edge processes, the edge's startEdge transport \"quic\" (checked: getEdgeStatus and getHubStatus name the transport), so client → edge → one QUIC connection over UDP, each client connection its own QUIC stream → hub → target. It is measured in the throughput, latency and connection-rate rows (and the idle RSS), in the same alternating rounds as the others; quicPerRelay is tunnel-quic/relay, quicPerTunnel tunnel-quic/tunnel.",
	"The tunnel's target parses and checks the PROXY v1 header the hub writes; direct and relay connections carry no header (the relays do not add one); after it the target code is the same.",
	"CPU per GB: utime+stime of the set-up's own processes (hub+edge, or relay-in+relay-out) from /proc/<pid>/stat (CLK_TCK 100) during the 1-stream client→target transfer, over the bytes the target received.",
	"Memory: VmRSS of the set-up's processes, summed; per connection = (RSS holding the most connections − RSS before the row) / connections. Each held connection completed one 64-byte round trip first.",
	"Fairness: one stream whose client reads 64 KiB then stops, while its target writes as fast as it can, beside one bulk target→client transfer; ratio = bulk throughput beside it / alone (the 1-stream target→client row). Bytes in flight = what the target wrote before blocking − what the client read, kernel socket buffers included (direct shows the kernel's share).",
	"Events: the hub's streamOpened/streamClosed lines counted on its stdout, which the bench reads without pause, during the connection-rate row.",
}

// writeJSON writes bench.json.
func (b *bench) writeJSON() error {
	rep := jsonReport{
		Machine: b.mach, Config: b.cfg, NofileSoft: b.nofile.Cur, NofileHard: b.nofile.Max,
		DurationSeconds: time.Since(b.started).Seconds(),
		Setup:           map[string]map[string]any{}, Details: b.res.details,
		Events: b.events, FinalStatus: b.final, Children: b.children, ChildStderr: b.stderr,
		Problems: b.res.problems, Notes: notes, Environment: b.res.envNotes, Target: map[string]map[string]any{},
	}
	if rep.Problems == nil {
		rep.Problems = []string{}
	}
	if b.err != nil {
		rep.Error = b.err.Error()
	}
	for _, m := range b.setups() {
		rep.Setup[m.name] = m.info
		rep.Target[m.name] = map[string]any{"accepted": m.tgt.accepted.Load(), "headerErrors": m.tgt.headerErrors.Load(), "proxyHeader": m.tgt.proxy}
	}
	for _, d := range b.res.withLabels(rowDefs(b.cfg)) {
		row := jsonRow{rowDef: d, Values: map[string]*float64{}}
		for _, mode := range allModes {
			if d.applies(mode) {
				row.AppliesTo = append(row.AppliesTo, mode)
			}
			if v, ok := b.res.get(d.Key, mode); ok && d.applies(mode) {
				row.Values[mode] = &v
			} else {
				row.Values[mode] = nil
			}
		}
		if r, ok := ratioOf(row.Values, modeTunnel, modeRelay); ok {
			row.TunnelPerRelay = &r
		}
		if r, ok := ratioOf(row.Values, modeTunnelQUIC, modeRelay); ok {
			row.QUICPerRelay = &r
		}
		if r, ok := ratioOf(row.Values, modeTunnelQUIC, modeTunnel); ok {
			row.QUICPerTunnel = &r
		}
		rep.Rows = append(rep.Rows, row)
	}
	out, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(b.cfg.JSONPath, append(out, '\n'), 0o644)
}

// ratioOf is vals[a]/vals[b] when both are there.
func ratioOf(vals map[string]*float64, a, b string) (float64, bool) {
	t, r := vals[a], vals[b]
	if t == nil || r == nil || *r == 0 {
		return 0, false
	}
	return *t / *r, true
}

// printTable writes the fixed-width table.
func (b *bench) printTable(w io.Writer) {
	fmt.Fprintf(w, "remoteingress-bench  %s  (%.0f s)\n", b.mach.Started, time.Since(b.started).Seconds())
	fmt.Fprintf(w, "machine: %s, %d cores, %s %s/%s, kernel %s\n", b.mach.CPUModel, b.mach.Cores, b.mach.GoVersion, b.mach.OS, b.mach.Arch, b.mach.Kernel)
	fmt.Fprintf(w, "binary:  %s (version %s); load average %s at start, %s at end\n", b.cfg.Bin, b.mach.BinVersion, b.mach.LoadStart, b.mach.LoadEnd)
	mode := "full"
	if b.cfg.Quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "run:     %s; bulk %v per transfer, %d round trips, %d conns × %v, %d connections (%d workers), RLIMIT_NOFILE %d\n\n",
		mode, b.cfg.Duration, b.cfg.LatencyRT, b.cfg.LatencyConns, b.cfg.LatencyDur, b.cfg.Conns, b.cfg.Workers, b.nofile.Cur)

	// The QUIC columns are there when tunnel-quic was measured.
	quic := b.measured(modeTunnelQUIC)
	const labelW, unitW, colW = 46, 7, 11
	fmt.Fprintf(w, "%-*s %-*s %*s %*s %*s", labelW, "row", unitW, "unit", colW, modeDirect, colW, modeRelay, colW, modeTunnel)
	width := labelW + unitW + 3*colW + 13 + 5
	if quic {
		fmt.Fprintf(w, " %*s", colW, modeTunnelQUIC)
		width += colW + 1 + 2*11
	}
	fmt.Fprintf(w, " %13s", "tunnel/relay")
	if quic {
		fmt.Fprintf(w, " %10s %10s", "quic/relay", "quic/tls")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, strings.Repeat("-", width))
	for _, d := range b.res.withLabels(rowDefs(b.cfg)) {
		vals := map[string]*float64{}
		fmt.Fprintf(w, "%-*s %-*s", labelW, d.Label, unitW, d.Unit)
		for _, mode := range allModes {
			if mode == modeTunnelQUIC && !quic {
				continue
			}
			cell := "-"
			if v, ok := b.res.get(d.Key, mode); ok && d.applies(mode) {
				vals[mode] = &v
				cell = strconv.FormatFloat(v, 'f', d.decimals, 64)
			} else if d.applies(mode) && b.measured(mode) && b.err == nil && len(b.cfg.Rows) == len(allRows) {
				cell = "failed"
			}
			fmt.Fprintf(w, " %*s", colW, cell)
		}
		rc := func(a, b string) string {
			if r, ok := ratioOf(vals, a, b); ok {
				return strconv.FormatFloat(r, 'f', 2, 64)
			}
			return ""
		}
		fmt.Fprintf(w, " %13s", rc(modeTunnel, modeRelay))
		if quic {
			fmt.Fprintf(w, " %10s %10s", rc(modeTunnelQUIC, modeRelay), rc(modeTunnelQUIC, modeTunnel))
		}
		fmt.Fprintln(w)
	}
	for _, n := range b.res.envNotes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
	if len(b.res.problems) > 0 {
		fmt.Fprintf(w, "\nproblems (%d):\n", len(b.res.problems))
		for _, p := range b.res.problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	} else {
		fmt.Fprintln(w, "\nno problems seen: every connection succeeded, events matched, no leaks, children exited cleanly.")
	}
	if b.err != nil {
		fmt.Fprintf(w, "\nrun failed: %v\n", b.err)
	}
	fmt.Fprintf(w, "\nall numbers and details: %s\n", b.cfg.JSONPath)
}

// measured reports whether mode was set up in this run.
func (b *bench) measured(mode string) bool {
	for _, m := range b.modes {
		if m.name == mode {
			return true
		}
	}
	return false
}

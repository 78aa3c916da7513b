package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The firewall row: the connection-rate measurement (openMany, as the
// connection-rate row) on the tunnel without and with cfg.FwCIDRs blocked
// CIDRs pushed to the edge through updateAllowedEdges firewall.blockedIps,
// in alternating rounds (without, with, without, with, ...), for two edges:
// the tunnel set-up's, whose edge runs the default backend ("auto": the
// in-process check, and nftables where the edge is root and the kernel has
// nf_tables), and one started with firewallBackend "process". Which backend
// the auto edge put in force is read from its stderr: the line "blocked
// addresses installed in nftables" after each push, or its absence.

// modeTunnelFwProc is the tunnel whose edge runs firewallBackend "process",
// measured in the firewall row only.
const modeTunnelFwProc = "tunnel-fwproc"

// randomBlockedCIDRs returns n distinct random prefixes, half IPv4 (never
// in 127.0.0.0/8, /16 to /32) and half IPv6 (inside 2000::/3, /32 to
// /128), so that none covers the bench's clients (127.0.0.1, ::1, or
// ::ffff:127.0.0.1).
func randomBlockedCIDRs(r *rand.Rand, n int) []string {
	seen := map[netip.Prefix]bool{}
	out := make([]string, 0, n)
	for len(out) < n {
		var p netip.Prefix
		if len(out)%2 == 0 {
			first := byte(1 + r.IntN(223)) // 1..223: unicast
			if first == 127 {
				continue
			}
			a := netip.AddrFrom4([4]byte{first, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
			p = netip.PrefixFrom(a, 16+r.IntN(17)).Masked()
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			b[0] = 0x20 | b[0]&0x1f // 2000::/3
			p = netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(97)).Masked()
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p.String())
	}
	return out
}

// fwArm is one backend's side of the firewall row.
type fwArm struct {
	backend string // the startEdge firewallBackend: auto (the default) or process
	key     string // the rows' key part
	m       *mode
	without []float64
	with    []float64
	inForce []string // per push with rules: the backend the edge's log says
	// the edge process's CPU µs per connection, per round
	cpuWithout, cpuWith []float64
	// the bench's, hub's and edge's CPU µs per connection, per round
	allWithout, allWith []float64
	applyMs             []float64
}

// pushFirewall sends the edge's entry with blocked (nil: no firewall) and
// waits for the edge's portsAssigned that follows the assignment. For a push
// with rules it returns the backend the edge put in force and how long from
// the answer to the event.
func (b *bench) pushFirewall(a *fwArm, blocked []string) (inForce string, apply time.Duration, err error) {
	edge := a.m.edge
	events0 := edge.eventCount("portsAssigned")
	nft0 := edge.stderr.matchCount(logNftInstalled)
	extra := map[string]any{}
	if blocked != nil {
		extra["firewall"] = map[string]any{"blockedIps": blocked}
	}
	if err := a.m.updateEdge(extra); err != nil {
		return "", 0, err
	}
	answered := time.Now()
	at, err := edge.eventAfter("portsAssigned", events0, 30*time.Second)
	if err != nil {
		return "", 0, err
	}
	apply = at.Sub(answered)
	if blocked != nil {
		// stderr is another pipe than stdout: give the log line a moment.
		inForce = "in-process"
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if edge.stderr.matchCount(logNftInstalled) > nft0 {
				inForce = "nftables+in-process"
				break
			}
		}
	}
	return inForce, apply, nil
}

// fwConnRate is one connection-rate measurement of cfg.FwConns
// connections. Every measurement starts from a quiet set-up, so that no arm
// pays for what came before it (a push's garbage, the other edge's round).
// It also returns the edge process's CPU time per connection (µs, from
// schedstat), read once the set-up has settled again.
func (b *bench) fwConnRate(m *mode) (rate, edgeCPUus, allCPUus float64, err error) {
	if err := m.settle(20 * time.Second); err != nil {
		return 0, 0, 0, err
	}
	time.Sleep(200 * time.Millisecond)
	cpu0, err := schedSeconds(m.edge.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	all0, err := allSched(m)
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	r := openMany(b.ctx, m.addr, b.cfg.FwConns, b.cfg.Workers, false)
	elapsed := time.Since(start)
	if r.failures > 0 || r.made == 0 {
		return 0, 0, 0, fmt.Errorf("%s: %d of %d connections failed (first: %v)", m.name, r.failures, r.made+r.failures, r.firstErr)
	}
	if err := m.settle(20 * time.Second); err != nil {
		return 0, 0, 0, err
	}
	cpu1, err := schedSeconds(m.edge.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	all1, err := allSched(m)
	if err != nil {
		return 0, 0, 0, err
	}
	n := float64(r.made)
	return n / elapsed.Seconds(), (cpu1 - cpu0) / n * 1e6, (all1 - all0) / n * 1e6, nil
}

// allSched is the CPU time so far of the bench process (its clients and
// targets, and the kernel's work on loopback packets they send, softirq
// included, which is where nftables' lookups of the client's packets run),
// the set-up's hub and edge, and the kernel's ksoftirqd threads (where
// softirq work goes when it piles up).
func allSched(m *mode) (float64, error) {
	var sum float64
	for _, pid := range append([]int{os.Getpid(), m.hub.pid(), m.edge.pid()}, ksoftirqd()...) {
		s, err := schedSeconds(pid)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// measureFirewall is the firewall row (tunnel only).
func (b *bench) measureFirewall(m *mode) error {
	if m.hub == nil {
		return nil
	}
	arms := []*fwArm{{backend: "auto", key: "auto", m: m}}
	if b.fwMode != nil {
		arms = append(arms, &fwArm{backend: "process", key: "process", m: b.fwMode})
	}
	blocked := randomBlockedCIDRs(rand.New(rand.NewPCG(1, 2)), b.cfg.FwCIDRs)
	for round := 1; round <= b.cfg.FwRounds; round++ {
		for _, a := range arms {
			if err := b.ctx.Err(); err != nil {
				return err
			}
			b.logf("  firewall %-7s round %d of %d: without, then with %d blocked CIDRs", a.backend, round, b.cfg.FwRounds, len(blocked))
			v, cpu, all, err := b.fwConnRate(a.m)
			if err != nil {
				return err
			}
			a.without = append(a.without, v)
			a.cpuWithout = append(a.cpuWithout, cpu)
			a.allWithout = append(a.allWithout, all)
			inForce, apply, err := b.pushFirewall(a, blocked)
			if err != nil {
				return err
			}
			a.inForce = append(a.inForce, inForce)
			a.applyMs = append(a.applyMs, ms(apply))
			v, cpu, all, err = b.fwConnRate(a.m)
			if err != nil {
				return err
			}
			a.with = append(a.with, v)
			a.cpuWith = append(a.cpuWith, cpu)
			a.allWith = append(a.allWith, all)
			if _, _, err := b.pushFirewall(a, nil); err != nil {
				return err
			}
		}
	}
	for _, a := range arms {
		refused, err := firewallRefused(a.m)
		if err != nil {
			return err
		}
		if refused != 0 {
			b.res.problem("firewall row, %s: the edge refused %.0f of the bench's own connections (firewallRefused)", a.m.name, refused)
		}
		var per []float64
		for i := range a.with {
			per = append(per, a.with[i]/a.without[i])
		}
		sorted := slices.Clone(per)
		sort.Float64s(sorted)
		ratio := mean(a.with) / mean(a.without)
		inForce := a.inForce[0]
		for _, s := range a.inForce[1:] {
			if s != inForce {
				inForce = "mixed"
				b.res.problem("firewall row, %s: the backend in force changed between rounds: %v", a.m.name, a.inForce)
				break
			}
		}
		b.res.set("fw_"+a.key+"_conn_rate_without", modeTunnel, mean(a.without))
		b.res.set("fw_"+a.key+"_conn_rate_with", modeTunnel, mean(a.with))
		b.res.set("fw_"+a.key+"_ratio", modeTunnel, ratio)
		b.res.set("fw_"+a.key+"_ratio_median", modeTunnel, median(per))
		b.res.set("fw_"+a.key+"_cpu_ratio", modeTunnel, mean(a.cpuWith)/mean(a.cpuWithout))
		b.res.set("fw_"+a.key+"_cpu_all_ratio", modeTunnel, mean(a.allWith)/mean(a.allWithout))
		for _, k := range []string{"conn_rate_without", "conn_rate_with", "ratio", "ratio_median", "cpu_ratio", "cpu_all_ratio"} {
			b.res.label("fw_"+a.key+"_"+k, fwLabel(a.backend, inForce, k, len(blocked)))
		}
		b.res.detail(modeTunnel, "firewall_"+a.key, map[string]any{
			"setup": a.m.name, "firewallBackend": a.backend, "inForce": a.inForce, "blockedCIDRs": len(blocked),
			"withoutPerRound": a.without, "withPerRound": a.with, "ratioPerRound": per,
			"ratioMinMedianMax": []float64{sorted[0], sorted[len(sorted)/2], sorted[len(sorted)-1]},
			"applyMsPerPush":    a.applyMs, "firewallRefused": refused,
			"edgeCpuUsPerConnWithout": a.cpuWithout, "edgeCpuUsPerConnWith": a.cpuWith,
			"benchHubEdgeCpuUsPerConnWithout": a.allWithout, "benchHubEdgeCpuUsPerConnWith": a.allWith,
			"connectionsPerMeasurement": b.cfg.FwConns,
			"order":                     "per round: without, then with (ABAB); the auto edge's round, then the process edge's; each measurement after the set-up settled and 200 ms of quiet",
		})
	}
	return nil
}

// fwLabel is the table label of a firewall row, naming the backend in
// force.
func fwLabel(backend, inForce, what string, n int) string {
	name := "fw " + backend
	if backend == "auto" && inForce != "" { // "": not measured
		name += "→" + map[string]string{"nftables+in-process": "nftables", "in-process": "in-process", "mixed": "mixed"}[inForce]
	}
	switch what {
	case "conn_rate_without":
		return name + ": conn rate, no rules"
	case "conn_rate_with":
		return fmt.Sprintf("%s: conn rate, %d CIDRs", name, n)
	case "ratio_median":
		return name + ": with/without, median round"
	case "cpu_ratio":
		return name + ": edge CPU/conn, with/without"
	case "cpu_all_ratio":
		return name + ": all CPU/conn, with/without"
	}
	return name + ": with/without, means"
}

// median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// firewallRefused is the edge's firewallRefused.
func firewallRefused(m *mode) (float64, error) {
	raw, err := m.edge.call("getEdgeStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return 0, err
	}
	var st struct {
		FirewallRefused float64 `json:"firewallRefused"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, err
	}
	return st.FirewallRefused, nil
}

// ksoftirqd lists the pids of the kernel's ksoftirqd/N threads.
var ksoftirqd = sync.OnceValue(func() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.HasPrefix(string(comm), "ksoftirqd/") {
			pids = append(pids, pid)
		}
	}
	return pids
})

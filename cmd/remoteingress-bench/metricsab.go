package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The metrics A/B run (-metrics-ab): two tunnel set-ups of the same binary,
// one with metricsListen off and one with it on for hub and edge while a
// scraper reads both /metrics every -scrape-interval, measured in rounds
// that alternate between them in ABBA order (off, on, on, off, ...), so
// that drift of the shared machine falls on both alike. Each round of a row
// gives an on/off ratio; the table shows the ratio of the totals and the
// spread of the per-round ratios, which says what resolution this machine
// allows.

const (
	modeMetricsOff = "metrics-off"
	modeMetricsOn  = "metrics-on"
)

// abRow is one row of the A/B run: its measurement gives a figure (higher is
// better) and, where it applies, CPU seconds per GB.
type abRow struct {
	key, name, unit string
	measure         func(ctx context.Context, cfg config, m *mode) (value, cpuPerGB float64, err error)
}

var abRows = []abRow{
	{"up1", "throughput, 1 stream, client→target", "Gbit/s", abBulk(1)},
	{"streams", "throughput, N streams, client→target", "Gbit/s", nil}, // N from the config, below
	{"connrate", "connection rate", "conn/s", abConnRate},
}

// abBulk measures streams concurrent bulk transfers client→target.
func abBulk(streams int) func(ctx context.Context, cfg config, m *mode) (float64, float64, error) {
	return func(ctx context.Context, cfg config, m *mode) (float64, float64, error) {
		cpu0, _, err := m.cpuSeconds()
		if err != nil {
			return 0, 0, err
		}
		var (
			wg    sync.WaitGroup
			total atomic.Int64
			errs  = make([]error, streams)
		)
		start := time.Now()
		for i := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, _, err := bulkUp(ctx, m.addr, cfg.Duration)
				total.Add(n)
				errs[i] = err
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		if err := errors.Join(errs...); err != nil {
			return 0, 0, err
		}
		cpu1, _, err := m.cpuSeconds()
		if err != nil {
			return 0, 0, err
		}
		n := total.Load()
		return gbps(n, elapsed), (cpu1 - cpu0) / (float64(n) / 1e9), nil
	}
}

// abConnRate opens cfg.Conns connections, one round trip each.
func abConnRate(ctx context.Context, cfg config, m *mode) (float64, float64, error) {
	start := time.Now()
	r := openMany(ctx, m.addr, cfg.Conns, cfg.Workers, false)
	if r.failures > 0 {
		return 0, 0, fmt.Errorf("%d connections failed (first: %v)", r.failures, r.firstErr)
	}
	return float64(r.made) / time.Since(start).Seconds(), 0, nil
}

// scraper reads every address's /metrics every interval until stopped.
type scraper struct {
	stop    chan struct{}
	done    sync.WaitGroup
	scrapes atomic.Int64
	fails   atomic.Int64
	bytes   atomic.Int64
}

func startScraper(addrs []string, interval time.Duration) *scraper {
	s := &scraper{stop: make(chan struct{})}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, a := range addrs {
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-s.stop:
					return
				case <-t.C:
				}
				resp, err := client.Get("http://" + a + "/metrics")
				if err != nil {
					s.fails.Add(1)
					continue
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
					s.fails.Add(1)
					continue
				}
				s.scrapes.Add(1)
				s.bytes.Add(n)
			}
		}()
	}
	return s
}

func (s *scraper) close() {
	close(s.stop)
	s.done.Wait()
}

// abResult is one row's outcome.
type abResult struct {
	Key        string             `json:"key"`
	Name       string             `json:"name"`
	Unit       string             `json:"unit"`
	Off        []float64          `json:"off"` // per round
	On         []float64          `json:"on"`
	CPUPerGB   map[string]float64 `json:"cpuSecondsPerGB,omitempty"` // over all rounds
	Ratio      float64            `json:"onPerOff"`                  // mean on / mean off
	RoundRatio []float64          `json:"onPerOffPerRound"`
	Errors     []string           `json:"errors,omitempty"`
}

// runMetricsAB is the whole A/B run; it returns the exit code.
func runMetricsAB(ctx context.Context, cfg config, kids *children) int {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "metrics-ab: "+format+"\n", args...) }
	for _, bin := range []string{cfg.Bin, cfg.ABOffBin} {
		if _, err := os.Stat(bin); bin != "" && err != nil {
			logf("binary %s: %v (run make build, or pass -bin)", bin, err)
			return 1
		}
	}
	var modes []*mode
	defer func() {
		for _, m := range modes {
			m.tgt.close()
		}
		kids.stopAll()
	}()
	offBin := cfg.ABOffBin
	if offBin == "" {
		offBin = cfg.Bin
	}
	for _, on := range []bool{false, true} {
		name, bin := modeMetricsOff, offBin
		if on {
			name, bin = modeMetricsOn, cfg.Bin
		}
		m, err := setupTunnel(kids, bin, name, "-"+name, 0, on, nil)
		if err != nil {
			logf("set-up %s: %v", name, err)
			return 1
		}
		modes = append(modes, m)
	}
	sc := startScraper(modes[1].metricsAddrs, cfg.ScrapeInterval)
	logf("metrics-off: %s; metrics-on: %s with metrics at %s, scraped every %v", offBin, cfg.Bin, strings.Join(modes[1].metricsAddrs, " and "), cfg.ScrapeInterval)
	time.Sleep(time.Second)

	rows := slices.Clone(abRows)
	rows[1].name = fmt.Sprintf("throughput, %d streams, client→target", cfg.Streams)
	rows[1].measure = abBulk(cfg.Streams)
	var results []abResult
	for _, r := range rows {
		if !slices.Contains(cfg.Rows, r.key) {
			continue
		}
		res := abResult{Key: r.key, Name: r.name, Unit: r.unit, CPUPerGB: map[string]float64{}}
		cpuSum := map[string][]float64{}
		for round := range cfg.ABRounds {
			order := []*mode{modes[0], modes[1]}
			if round%2 == 1 {
				order = []*mode{modes[1], modes[0]} // ABBA
			}
			for _, m := range order {
				if ctx.Err() != nil {
					return 130
				}
				logf("%-40s %-11s round %d of %d", r.name, m.name, round+1, cfg.ABRounds)
				v, cpu, err := r.measure(ctx, cfg, m)
				if err != nil {
					res.Errors = append(res.Errors, fmt.Sprintf("%s round %d: %v", m.name, round+1, err))
				}
				if m.name == modeMetricsOn {
					res.On = append(res.On, v)
				} else {
					res.Off = append(res.Off, v)
				}
				if cpu > 0 {
					cpuSum[m.name] = append(cpuSum[m.name], cpu)
				}
				if err := m.settle(20 * time.Second); err != nil {
					res.Errors = append(res.Errors, fmt.Sprintf("%s after round %d: %v", m.name, round+1, err))
				}
			}
		}
		for i := range min(len(res.On), len(res.Off)) {
			if res.Off[i] > 0 {
				res.RoundRatio = append(res.RoundRatio, res.On[i]/res.Off[i])
			}
		}
		if off := mean(res.Off); off > 0 {
			res.Ratio = mean(res.On) / off
		}
		for k, v := range cpuSum {
			res.CPUPerGB[k] = mean(v)
		}
		results = append(results, res)
	}
	sc.close()
	scrapes, fails, bytes := sc.scrapes.Load(), sc.fails.Load(), sc.bytes.Load()
	printAB(os.Stdout, results, scrapes, fails, bytes)
	out := map[string]any{
		"config": cfg, "machine": readMachine(), "rows": results,
		"scrapes": scrapes, "scrapeFailures": fails, "scrapeBytes": bytes,
		"note": "Rounds alternate metrics-off and metrics-on in ABBA order; onPerOff is the mean of the on rounds over the mean of the off rounds, onPerOffPerRound pairs the rounds.",
	}
	code := 0
	if b, err := json.MarshalIndent(out, "", "  "); err == nil {
		if err := os.WriteFile(cfg.JSONPath, append(b, '\n'), 0o644); err != nil {
			logf("writing %s: %v", cfg.JSONPath, err)
			code = 1
		}
	}
	for _, r := range results {
		if len(r.Errors) > 0 {
			logf("%s: %s", r.Name, strings.Join(r.Errors, "; "))
			code = 1
		}
	}
	if fails > 0 || scrapes == 0 {
		logf("%d scrapes, %d failed", scrapes, fails)
		code = 1
	}
	return code
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// printAB writes the A/B table.
func printAB(w io.Writer, rows []abResult, scrapes, fails, bytes int64) {
	fmt.Fprintf(w, "%-40s %-8s %10s %10s %8s   %s\n", "row", "unit", "off", "on", "on/off", "per-round on/off (min median max)")
	for _, r := range rows {
		rr := slices.Clone(r.RoundRatio)
		sort.Float64s(rr)
		spread := "-"
		if len(rr) > 0 {
			spread = fmt.Sprintf("%.3f %.3f %.3f", rr[0], rr[len(rr)/2], rr[len(rr)-1])
		}
		fmt.Fprintf(w, "%-40s %-8s %10.2f %10.2f %8.3f   %s\n", r.Name, r.Unit, mean(r.Off), mean(r.On), r.Ratio, spread)
		if off, on := r.CPUPerGB[modeMetricsOff], r.CPUPerGB[modeMetricsOn]; off > 0 && on > 0 {
			fmt.Fprintf(w, "%-40s %-8s %10.3f %10.3f %8.3f\n", "  CPU per GB (hub+edge)", "s/GB", off, on, on/off)
		}
	}
	avg := int64(0)
	if scrapes > 0 {
		avg = bytes / scrapes
	}
	fmt.Fprintf(w, "scrapes: %d (%d failed), %d bytes each on average\n", scrapes, fails, avg)
}

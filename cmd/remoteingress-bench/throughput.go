package main

import (
	"context"
	"errors"
	"math"
	"os"
	"sync"
	"time"
)

// throughputRounds is how many alternating rounds each throughput row is
// split into; every round is one full-length transfer per set-up.
const throughputRounds = 2

// bulkAcc gathers one throughput row's rounds of one set-up: the figures are
// totals over all rounds so far (bytes over seconds, CPU over bytes).
type bulkAcc struct {
	bytes    int64
	seconds  float64
	cpu      float64            // the set-up's own processes
	cpuEach  map[string]float64 // by process
	benchCPU float64            // the client and the target, for context
	counts   map[string]map[string]float64
	perRound []float64 // Gbit/s
	extra    []any     // per-round details of the row
}

func (b *bench) bulkAcc(row, mode string) *bulkAcc {
	if b.bulk == nil {
		b.bulk = map[string]*bulkAcc{}
	}
	k := row + "/" + mode
	if b.bulk[k] == nil {
		b.bulk[k] = &bulkAcc{cpuEach: map[string]float64{}, counts: map[string]map[string]float64{}}
	}
	return b.bulk[k]
}

// gbps is the row's throughput over all rounds so far.
func (a *bulkAcc) gbps() float64 {
	return gbps(a.bytes, time.Duration(a.seconds*float64(time.Second)))
}

// details is what bench.json keeps of the row for one set-up.
func (a *bulkAcc) details() map[string]any {
	return map[string]any{
		"bytes": a.bytes, "seconds": a.seconds, "rounds": len(a.perRound), "gbpsPerRound": a.perRound,
		"cpuSeconds": a.cpu, "cpuSecondsEach": a.cpuEach, "benchCpuSeconds": a.benchCPU,
		"perMiB": perUnit(a.counts, nil, float64(a.bytes)/(1<<20)), "perRound": a.extra,
	}
}

// measureBulk runs transfer once and adds its bytes, time, CPU and
// per-process counters to the row's accumulator.
func (b *bench) measureBulk(m *mode, row string, transfer func() (int64, time.Duration, any, error)) (*bulkAcc, error) {
	cpu0, each0, err := m.cpuSeconds()
	if err != nil {
		return nil, err
	}
	self0, _ := cpuSeconds(os.Getpid())
	count0 := m.counters()
	n, d, extra, err := transfer()
	if err != nil {
		return nil, err
	}
	count1 := m.counters()
	cpu1, each1, err := m.cpuSeconds()
	if err != nil {
		return nil, err
	}
	self1, _ := cpuSeconds(os.Getpid())
	a := b.bulkAcc(row, m.name)
	a.bytes += n
	a.seconds += d.Seconds()
	a.cpu += cpu1 - cpu0
	for k, v := range diff(each1, each0) {
		a.cpuEach[k] += v
	}
	a.benchCPU += self1 - self0
	for proc, c := range count1 {
		if a.counts[proc] == nil {
			a.counts[proc] = map[string]float64{}
		}
		for k, v := range diff(c, count0[proc]) {
			a.counts[proc][k] += v
		}
	}
	a.perRound = append(a.perRound, gbps(n, d))
	if extra != nil {
		a.extra = append(a.extra, extra)
	}
	b.res.detail(m.name, row, a.details())
	return a, nil
}

// measureUp1 is one bulk transfer client→target, with the CPU time the
// set-up's own processes spent on it.
func (b *bench) measureUp1(m *mode) error {
	a, err := b.measureBulk(m, "throughput1Up", func() (int64, time.Duration, any, error) {
		n, d, err := bulkUp(b.ctx, m.addr, b.cfg.Duration)
		return n, d, nil, err
	})
	if err != nil {
		return err
	}
	b.res.set("throughput_1_up_gbps", m.name, a.gbps())
	if len(m.procs) > 0 {
		b.res.set("cpu_seconds_per_gb", m.name, a.cpu/(float64(a.bytes)/1e9))
	}
	return nil
}

// measureDown1 is one bulk transfer target→client.
func (b *bench) measureDown1(m *mode) error {
	a, err := b.measureBulk(m, "throughput1Down", func() (int64, time.Duration, any, error) {
		n, d, err := bulkDown(b.ctx, m.addr, b.cfg.Duration)
		return n, d, nil, err
	})
	if err != nil {
		return err
	}
	b.res.set("throughput_1_down_gbps", m.name, a.gbps())
	return nil
}

// measureUpN is cfg.Streams bulk transfers client→target at once; the
// aggregate is all bytes over the time until the last one finished.
func (b *bench) measureUpN(m *mode) error {
	a, err := b.measureBulk(m, "throughputNUp", func() (int64, time.Duration, any, error) {
		total, d, per, err := nStreamsUp(b.ctx, m.addr, b.cfg.Streams, b.cfg.Duration)
		return total, d, map[string]any{"perStreamGbps": per}, err
	})
	if err != nil {
		return err
	}
	switch m.name {
	case modeTunnelSet:
		b.res.set("throughput_n_up_set_gbps", modeTunnel, a.gbps())
	case modeTunnel, modeTunnelQUIC:
		b.res.set("throughput_n_up_gbps", m.name, a.gbps())
	default: // the baselines have no tunnel connections: the same figure for both rows
		b.res.set("throughput_n_up_gbps", m.name, a.gbps())
		b.res.set("throughput_n_up_set_gbps", m.name, a.gbps())
	}
	return nil
}

// nStreamsUp runs n bulk transfers client→target at once for d each; it
// returns all bytes, the time until the last one finished and each
// stream's Gbit/s.
func nStreamsUp(ctx context.Context, addr string, n int, d time.Duration) (int64, time.Duration, []float64, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		errs  []error
		per   []float64
	)
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, d, err := bulkUp(ctx, addr, d)
			mu.Lock()
			defer mu.Unlock()
			total += n
			per = append(per, gbps(n, d))
			errs = append(errs, err)
		}()
	}
	wg.Wait()
	return total, time.Since(start), per, errors.Join(errs...)
}

// diff is a − b per key.
func diff(a, b map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range a {
		d[k] = v - b[k]
	}
	return d
}

// perUnit turns two snapshots of per-process counters into counts per unit.
func perUnit(after, before map[string]map[string]float64, units float64) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	if units == 0 {
		return out
	}
	for proc, a := range after {
		out[proc] = map[string]float64{}
		for k, v := range diff(a, before[proc]) { // with before nil, after is a difference already
			out[proc][k] = math.Round(v/units*100) / 100
		}
	}
	return out
}

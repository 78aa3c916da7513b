package main

import (
	"errors"
	"math"
	"os"
	"sync"
	"time"
)

// measureUp1 is one bulk transfer client→target, with the CPU time the
// set-up's own processes spent on it.
func (b *bench) measureUp1(m *mode) error {
	cpu0, each0, err := m.cpuSeconds()
	if err != nil {
		return err
	}
	self0, _ := cpuSeconds(os.Getpid())
	count0 := m.counters()
	n, d, err := bulkUp(b.ctx, m.addr, b.cfg.Duration)
	if err != nil {
		return err
	}
	count1 := m.counters()
	cpu1, each1, err := m.cpuSeconds()
	if err != nil {
		return err
	}
	self1, _ := cpuSeconds(os.Getpid())
	b.res.set("throughput_1_up_gbps", m.name, gbps(n, d))
	b.res.detail(m.name, "throughput1Up", map[string]any{
		"bytes": n, "seconds": d.Seconds(),
		"cpuSeconds": cpu1 - cpu0, "cpuSecondsEach": diff(each1, each0),
		"benchCpuSeconds": self1 - self0, // the client and the target, for context
		"perMiB":          perMiB(count1, count0, n),
	})
	if len(m.procs) > 0 {
		b.res.set("cpu_seconds_per_gb", m.name, (cpu1-cpu0)/(float64(n)/1e9))
	}
	return nil
}

// measureDown1 is one bulk transfer target→client.
func (b *bench) measureDown1(m *mode) error {
	n, d, err := bulkDown(b.ctx, m.addr, b.cfg.Duration)
	if err != nil {
		return err
	}
	b.res.set("throughput_1_down_gbps", m.name, gbps(n, d))
	b.res.detail(m.name, "throughput1Down", map[string]any{"bytes": n, "seconds": d.Seconds()})
	return nil
}

// measureUpN is cfg.Streams bulk transfers client→target at once; the
// aggregate is all bytes over the time until the last one finished.
func (b *bench) measureUpN(m *mode) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		errs  []error
		per   []float64
	)
	start := time.Now()
	for range b.cfg.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, d, err := bulkUp(b.ctx, m.addr, b.cfg.Duration)
			mu.Lock()
			defer mu.Unlock()
			total += n
			per = append(per, gbps(n, d))
			errs = append(errs, err)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	switch m.name {
	case modeTunnelSet:
		b.res.set("throughput_n_up_set_gbps", modeTunnel, gbps(total, elapsed))
	case modeTunnel:
		b.res.set("throughput_n_up_gbps", m.name, gbps(total, elapsed))
	default: // the baselines have no tunnel connections: the same figure for both rows
		b.res.set("throughput_n_up_gbps", m.name, gbps(total, elapsed))
		b.res.set("throughput_n_up_set_gbps", m.name, gbps(total, elapsed))
	}
	b.res.detail(m.name, "throughputNUp", map[string]any{"bytes": total, "seconds": elapsed.Seconds(), "perStreamGbps": per})
	return nil
}

// diff is a − b per key.
func diff(a, b map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range a {
		d[k] = v - b[k]
	}
	return d
}

// perMiB turns two snapshots of per-process counters into counts per MiB moved.
func perMiB(after, before map[string]map[string]float64, bytes int64) map[string]map[string]float64 {
	return perUnit(after, before, float64(bytes)/(1<<20))
}

// perUnit turns two snapshots of per-process counters into counts per unit.
func perUnit(after, before map[string]map[string]float64, units float64) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	if units == 0 {
		return out
	}
	for proc, a := range after {
		out[proc] = map[string]float64{}
		for k, v := range diff(a, before[proc]) {
			out[proc][k] = math.Round(v/units*100) / 100
		}
	}
	return out
}

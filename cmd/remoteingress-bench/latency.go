package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"time"
)

// warmupRoundTrips are done and not counted before a latency measurement.
const warmupRoundTrips = 200

// measureLatency1 is cfg.LatencyRT 64-byte round trips on one connection.
func (b *bench) measureLatency1(m *mode) error {
	acc := b.latencyAcc("latency1", m.name)
	c, err := openEcho(b.ctx, m.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, echoLen)
	for range warmupRoundTrips {
		if err := roundTrip(c, buf); err != nil {
			return err
		}
	}
	n := max(b.cfg.LatencyRT/latencyRounds, 1)
	ds := make([]time.Duration, 0, n)
	count0 := m.counters()
	start := time.Now()
	for range n {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := roundTrip(c, buf); err != nil {
			return err
		}
		ds = append(ds, time.Since(t0))
	}
	elapsed := time.Since(start)
	count1 := m.counters()
	all := acc.add(ds, elapsed)
	p50, p99 := percentiles(all)
	r50, _ := percentiles(ds)
	acc.perRound = append(acc.perRound, r50)
	b.res.set("latency_1_p50_us", m.name, p50)
	b.res.set("latency_1_p99_us", m.name, p99)
	b.res.detail(m.name, "latency1", map[string]any{"roundTrips": len(all), "seconds": acc.seconds,
		"rounds": len(acc.perRound), "p50UsPerRound": acc.perRound,
		"maxUs": float64(all[len(all)-1]) / 1e3, "perRoundTripLastRound": perUnit(count1, count0, float64(len(ds)))})
	return nil
}

// latencyRounds is how many alternating rounds each latency row is split into.
const latencyRounds = 4

// latencyAcc gathers one latency row's samples of one set-up over its rounds.
type latencyAcc struct {
	ds       []time.Duration
	seconds  float64
	perRound []float64
}

// add appends one round's samples and returns all so far.
func (a *latencyAcc) add(ds []time.Duration, d time.Duration) []time.Duration {
	a.ds = append(a.ds, ds...)
	a.seconds += d.Seconds()
	return a.ds
}

func (b *bench) latencyAcc(row, mode string) *latencyAcc {
	if b.latency == nil {
		b.latency = map[string]*latencyAcc{}
	}
	k := row + "/" + mode
	if b.latency[k] == nil {
		b.latency[k] = &latencyAcc{}
	}
	return b.latency[k]
}

// measureLatencyN is cfg.LatencyConns connections ping-ponging at once for
// cfg.LatencyDur.
func (b *bench) measureLatencyN(m *mode) error {
	acc := b.latencyAcc("latencyN", m.name)
	dur := b.cfg.LatencyDur / latencyRounds
	conns := make([]net.Conn, 0, b.cfg.LatencyConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range b.cfg.LatencyConns {
		c, err := openEcho(b.ctx, m.addr)
		if err != nil {
			return fmt.Errorf("opening connection %d: %w", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		all    []time.Duration
		errs   []error
		ready  sync.WaitGroup
		startc = make(chan struct{})
	)
	var start time.Time
	ready.Add(len(conns))
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, echoLen)
			ds := make([]time.Duration, 0, 4096)
			ready.Done()
			<-startc
			end := start.Add(dur)
			var err error
			for b.ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				if err = roundTrip(c, buf); err != nil {
					break
				}
				ds = append(ds, time.Since(t0))
			}
			mu.Lock()
			all = append(all, ds...)
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	ready.Wait()
	count0 := m.counters()
	_, cpu0, cerr0 := m.cpuSeconds()
	start = time.Now()
	close(startc)
	wg.Wait()
	elapsed := time.Since(start)
	count1 := m.counters()
	_, cpu1, cerr1 := m.cpuSeconds()
	if err := errors.Join(append(errs, cerr0, cerr1)...); err != nil {
		return err
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	round := len(all)
	all = acc.add(all, elapsed)
	p50, p99 := percentiles(all)
	acc.perRound = append(acc.perRound, float64(round)/elapsed.Seconds()) // round trips/s per round
	b.res.set("latency_n_p50_us", m.name, p50)
	b.res.set("latency_n_p99_us", m.name, p99)
	b.res.set("latency_n_rate", m.name, float64(len(all))/acc.seconds)
	b.res.detail(m.name, "latencyN", map[string]any{"connections": len(conns), "roundTrips": len(all),
		"seconds": acc.seconds, "rounds": len(acc.perRound), "roundTripsPerSecondPerRound": acc.perRound,
		"maxUs": float64(all[len(all)-1]) / 1e3, "perRoundTripLastRound": perUnit(count1, count0, float64(round)),
		"cpuUsPerRoundTripLastRound": cpuMicrosPer(cpu1, cpu0, round)})
	return nil
}

// cpuMicrosPer is the CPU time of each process between two snapshots, in
// microseconds per unit of work.
func cpuMicrosPer(after, before map[string]float64, units int) map[string]float64 {
	out := map[string]float64{}
	if units == 0 {
		return out
	}
	for proc, s := range diff(after, before) {
		out[proc] = math.Round(s/float64(units)*1e6*100) / 100
	}
	return out
}

package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// warmupRoundTrips are done and not counted before a latency measurement.
const warmupRoundTrips = 200

// measureLatency1 is cfg.LatencyRT 64-byte round trips on one connection.
func (b *bench) measureLatency1(m *mode) error {
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
	ds := make([]time.Duration, 0, b.cfg.LatencyRT)
	start := time.Now()
	for range b.cfg.LatencyRT {
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
	p50, p99 := percentiles(ds)
	b.res.set("latency_1_p50_us", m.name, p50)
	b.res.set("latency_1_p99_us", m.name, p99)
	b.res.detail(m.name, "latency1", map[string]any{"roundTrips": len(ds), "seconds": elapsed.Seconds(),
		"maxUs": float64(ds[len(ds)-1]) / 1e3})
	return nil
}

// measureLatencyN is cfg.LatencyConns connections ping-ponging at once for
// cfg.LatencyDur.
func (b *bench) measureLatencyN(m *mode) error {
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
			end := start.Add(b.cfg.LatencyDur)
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
	start = time.Now()
	close(startc)
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	p50, p99 := percentiles(all)
	b.res.set("latency_n_p50_us", m.name, p50)
	b.res.set("latency_n_p99_us", m.name, p99)
	b.res.set("latency_n_rate", m.name, float64(len(all))/elapsed.Seconds())
	b.res.detail(m.name, "latencyN", map[string]any{"connections": len(conns), "roundTrips": len(all),
		"seconds": elapsed.Seconds(), "maxUs": float64(all[len(all)-1]) / 1e3})
	return nil
}

package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// openResult is what openMany did.
type openResult struct {
	conns    []net.Conn // kept connections (keep only)
	made     int64      // connections that completed their round trip
	failures int64
	firstErr error
}

// openMany opens n echo connections with workers in parallel, each doing one
// round trip; it keeps them open when keep is set, else closes each at once.
// It stops early after 20 failures.
func openMany(ctx context.Context, addr string, n, workers int, keep bool) openResult {
	var (
		next, made, failures atomic.Int64
		mu                   sync.Mutex
		res                  openResult
		wg                   sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && failures.Load() < 20 && next.Add(1) <= int64(n) {
				c, err := openEcho(ctx, addr)
				if err != nil {
					if failures.Add(1) == 1 {
						mu.Lock()
						res.firstErr = err
						mu.Unlock()
					}
					continue
				}
				made.Add(1)
				if keep {
					mu.Lock()
					res.conns = append(res.conns, c)
					mu.Unlock()
				} else {
					c.Close()
				}
			}
		}()
	}
	wg.Wait()
	res.made, res.failures = made.Load(), failures.Load()
	return res
}

// measureConnRate opens, does one round trip on and closes cfg.Conns
// connections with cfg.Workers workers; for the tunnel it also checks the
// hub's streamOpened and streamClosed events against them.
func (b *bench) measureConnRate(m *mode) error {
	var opened0, closed0 int64
	if m.hub != nil {
		opened0, closed0 = m.hub.eventCount("streamOpened"), m.hub.eventCount("streamClosed")
	}
	accepted0 := m.tgt.accepted.Load()
	start := time.Now()
	r := openMany(b.ctx, m.addr, b.cfg.Conns, b.cfg.Workers, false)
	elapsed := time.Since(start)
	b.res.detail(m.name, "connRate", map[string]any{"connections": r.made, "failures": r.failures,
		"seconds": elapsed.Seconds(), "targetAccepted": m.tgt.accepted.Load() - accepted0})
	if r.failures > 0 {
		b.res.problem("connection rate, %s: %d of %d connections failed (first: %v)", m.name, r.failures, r.made+r.failures, r.firstErr)
	}
	if r.made == 0 {
		return fmt.Errorf("no connection succeeded: %v", r.firstErr)
	}
	b.res.set("conn_rate", m.name, float64(r.made)/elapsed.Seconds())
	if m.hub == nil {
		return nil
	}
	// Events are asynchronous: give them time to arrive, then compare.
	want := r.made + r.failures // a failed connection may still have been a stream
	deadline := time.Now().Add(10 * time.Second)
	var opened, closed int64
	for {
		opened = m.hub.eventCount("streamOpened") - opened0
		closed = m.hub.eventCount("streamClosed") - closed0
		if (opened >= want && closed >= opened) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // anything beyond the expected count
	opened = m.hub.eventCount("streamOpened") - opened0
	closed = m.hub.eventCount("streamClosed") - closed0
	b.res.set("events_connections", m.name, float64(r.made))
	b.res.set("events_stream_opened", m.name, float64(opened))
	b.res.set("events_stream_closed", m.name, float64(closed))
	if opened != r.made || closed != r.made {
		b.res.problem("events: %d connections made, but the hub sent %d streamOpened and %d streamClosed", r.made, opened, closed)
	}
	return nil
}

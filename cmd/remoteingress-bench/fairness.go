package main

import (
	"fmt"
	"io"
	"time"
)

// stallPrefix is what the client of the stalled stream reads before it stops
// reading.
const stallPrefix = 64 << 10

// measureFairness opens a stream whose target writes as fast as it can and
// whose client stops reading, waits until the target's writes block, then
// runs a bulk target→client transfer beside it (the same direction as the
// stalled data) and compares it with the bulk transfer alone. The bytes in
// flight for the stalled stream are what the target managed to write minus
// what the client read: every buffer on the way, kernel socket buffers
// included.
func (b *bench) measureFairness(m *mode) error {
	alone, ok := b.res.get("throughput_1_down_gbps", m.name)
	if !ok {
		if err := b.measureDown1(m); err != nil {
			return err
		}
		alone, _ = b.res.get("throughput_1_down_gbps", m.name)
	}
	m.tgt.stallWritten.Store(0)
	c, err := dialRole(b.ctx, m.addr, roleStall, 0, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	read, err := io.ReadFull(c, make([]byte, stallPrefix))
	if err != nil {
		return fmt.Errorf("stalled stream: reading its first bytes: %w", err)
	}
	written, stableAfter := waitStable(&m.tgt.stallWritten, 500*time.Millisecond, 15*time.Second)
	before := written - int64(read)

	n, d, err := bulkDown(b.ctx, m.addr, b.cfg.Duration)
	if err != nil {
		return fmt.Errorf("bulk stream beside the stalled one: %w", err)
	}
	beside := gbps(n, d)
	after := m.tgt.stallWritten.Load() - int64(read)

	// The stalled stream must still work: read back what is in flight.
	resumed := true
	want := min(after, 4<<20)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, want)); err != nil {
		resumed = false
		b.res.problem("fairness, %s: the stalled stream did not resume: %v", m.name, err)
	}
	b.res.set("fair_bulk_ratio", m.name, beside/alone)
	b.res.set("fair_inflight_kib", m.name, float64(after)/1024)
	b.res.detail(m.name, "fairness", map[string]any{
		"bulkAloneGbps": alone, "bulkBesideStalledGbps": beside,
		"inflightBytesBeforeBulk": before, "inflightBytesAfterBulk": after,
		"stallSettledSeconds": stableAfter.Seconds(), "stalledStreamResumed": resumed,
	})
	return nil
}

// counter is an atomic int64.
type counter interface{ Load() int64 }

// waitStable waits until c has not changed for quiet (at most limit) and
// returns its value and how long that took.
func waitStable(c counter, quiet, limit time.Duration) (int64, time.Duration) {
	start := time.Now()
	last, since := c.Load(), time.Now()
	for time.Since(start) < limit {
		time.Sleep(50 * time.Millisecond)
		v := c.Load()
		if v != last {
			last, since = v, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			break
		}
	}
	return last, since.Sub(start)
}

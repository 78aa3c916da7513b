package main

import (
	"fmt"
	"time"
)

// Descriptors kept free for everything other than the held connections.
const (
	fdReserveBench = 512
	fdReserveChild = 64
)

// measureMemory holds cfg.MemLevels idle connections (each after one round
// trip, so the target side exists) and reads the RSS of the set-up's
// processes at each level, in its steady state (steadyRSS); per connection
// is that RSS less the processes' idle RSS, over the connections. The row
// runs on fresh processes of the set-up, started for it alone and stopped
// after it: what the rows before it left in a heap counts for neither side,
// and a relay that held 10 000 connections slows no row after it. The client side of the connections lives in a
// hold process. The direct set-up has no process of its own and is skipped.
func (b *bench) measureMemory(orig *mode) error {
	if len(orig.procs) == 0 {
		return nil
	}
	m, err := b.freshCopy(orig)
	if err != nil {
		return fmt.Errorf("fresh processes for the memory row: %w", err)
	}
	defer b.stopCopy(m)
	m.name = orig.name // the row's results are the set-up's
	capacity, limitedBy := b.connCapacity(m)
	base := m.idleKiB
	h, err := startHolder(b.kids, m.addr, b.cfg.Workers)
	if err != nil {
		return err
	}
	defer h.close()
	levels := map[string]any{}
	held, top, topRSS := 0, 0, int64(0)
	for _, level := range b.cfg.MemLevels {
		want := min(level, capacity)
		if want < level {
			b.res.note("memory, %s: %s allows %d connections, not %d; the row reports the %d reached", m.name, limitedBy, capacity, level, capacity)
		}
		got, failures, firstErr, err := h.open(want - held)
		if err != nil {
			return err
		}
		held = got
		if failures > 0 {
			b.res.problem("memory, %s: %d connections failed on the way to %d (first: %s); holding %d", m.name, failures, level, firstErr, held)
		}
		if err := b.ctx.Err(); err != nil {
			return err
		}
		if m.hub != nil {
			if err := b.waitStreams(m, held); err != nil {
				b.res.problem("memory, %s: %v", m.name, err)
			}
		}
		sum, each, err := b.steadyRSS(m)
		if err != nil {
			return err
		}
		b.res.set(fmt.Sprintf("rss_%d_mib", level), m.name, float64(sum)/1024)
		if held > 0 {
			b.res.set(fmt.Sprintf("mem_kib_per_conn_%d", level), m.name, float64(sum-base)/float64(held))
		}
		levels[fmt.Sprint(level)] = map[string]any{"held": held, "rssKiB": each}
		top, topRSS = held, sum
		if held < want {
			break
		}
	}
	b.res.set("mem_conns_reached", m.name, float64(top))
	if top > 0 {
		b.res.set("mem_kib_per_conn", m.name, float64(topRSS-base)/float64(top))
	}
	b.res.detail(m.name, "memory", map[string]any{"baseRssKiB": base, "levels": levels,
		"capacity": capacity, "capacityLimitedBy": limitedBy})
	return nil
}

// connCapacity is how many connections the set-up can hold within the
// descriptor limits: the bench process holds the target side (one each),
// relay-in two per connection, relay-out, the hub and the edge one.
func (b *bench) connCapacity(m *mode) (int, string) {
	capacity := int(b.nofile.Cur) - fdReserveBench
	by := fmt.Sprintf("the bench's RLIMIT_NOFILE %d", b.nofile.Cur)
	for _, p := range m.procs {
		lim, err := openFilesLimit(p.pid())
		if err != nil {
			continue
		}
		per := 1
		if p.name == relayInCmd {
			per = 2
		}
		if c := (int(lim) - fdReserveChild) / per; c < capacity {
			capacity = c
			by = fmt.Sprintf("%s's RLIMIT_NOFILE %d (%d descriptors per connection)", p.name, lim, per)
		}
	}
	return capacity, by
}

// waitStreams waits until the hub and the edge both report n active streams.
func (b *bench) waitStreams(m *mode, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		hub, edge, err := m.streams()
		if err != nil {
			return err
		}
		if hub == n && edge == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("holding %d connections, the hub reports %d active streams and the edge %d", n, hub, edge)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Held connections are measured in their steady state, the one a server
// holding idle connections lives in: the RSS is read every rssPoll once
// rssSettleMin has passed, until two reads agree within 1% (or rssSettleMax).
// The tunnel hibernates a stream whose socket has been silent for a second
// or two; the relay has nothing of the kind, and waiting costs it nothing.
const (
	rssSettleMin = 3 * time.Second
	rssSettleMax = 10 * time.Second
	rssPoll      = 500 * time.Millisecond
)

// steadyRSS waits for the set-up's RSS to settle and returns it.
func (b *bench) steadyRSS(m *mode) (int64, map[string]int64, error) {
	start := time.Now()
	time.Sleep(rssSettleMin)
	last, each, err := m.rssKiB()
	for err == nil && time.Since(start) < rssSettleMax {
		time.Sleep(rssPoll)
		var sum int64
		sum, each, err = m.rssKiB()
		if err != nil {
			break
		}
		settled := abs(sum-last)*100 <= last
		last = sum
		if settled {
			break
		}
	}
	return last, each, err
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// freshCopy starts new processes of set-up m (relay or tunnel), as the
// bench's set-up does, and records their idle RSS.
func (b *bench) freshCopy(m *mode) (*mode, error) {
	var fresh *mode
	var err error
	switch m.name {
	case modeRelay:
		fresh, err = setupRelay(b.kids, b.tmpdir, m.tgt)
	case modeTunnel:
		fresh, err = setupTunnel(b.kids, b.cfg.Bin, modeTunnel, "-mem", 0, false, nil)
		if fresh != nil {
			b.targets = append(b.targets, fresh.tgt)
		}
	default:
		return nil, fmt.Errorf("no fresh copy of set-up %s", m.name)
	}
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Second) // let the fresh processes reach their idle state
	if fresh.idleKiB, _, err = fresh.rssKiB(); err != nil {
		b.stopCopy(fresh)
		return nil, err
	}
	return fresh, nil
}

// stopCopy stops the processes of a fresh copy: the tunnel's hub and edge
// are stopped over the management dialect first, like the set-ups at the end.
func (b *bench) stopCopy(m *mode) {
	if m.edge != nil {
		_, _ = m.edge.call("stopEdge", map[string]any{}, 10*time.Second)
	}
	if m.hub != nil {
		_, _ = m.hub.call("stopHub", map[string]any{}, 10*time.Second)
	}
	for _, p := range m.procs {
		p.stop()
	}
}

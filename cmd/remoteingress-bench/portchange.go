package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The port-change row: with the tunnel up, the hub's allow list entry of the
// edge is changed cfg.PortChanges times, each time to the edge's own port
// plus a new one (dropping the previous new one). From the moment the
// updateAllowedEdges answer arrives, the bench dials the new port on the
// edge's listen host in a tight loop until a connect succeeds; that
// connection then does one echo round trip through the tunnel to a target
// listening on the same number. The removed port must stop accepting: it is
// dialled until refused, for up to 2 s (CONTRACT section 7: within 2 s).

// pollSleep is the pause between two connect attempts of the port-change
// row: the row's resolution.
const pollSleep = 200 * time.Microsecond

// portChangeDeadline bounds each wait of the port-change row.
const portChangeDeadline = 2 * time.Second

// freeLowPort returns a TCP port below the kernel's ephemeral range (so no
// outgoing connection takes it meanwhile) that is free on every host, not
// one of avoid, and the listener it holds on the last host.
func freeLowPort(hosts []string, avoid []int) (int, net.Listener, error) {
	lo, hi := lowPortRange()
	for range 200 {
		p := lo + rand.IntN(hi-lo+1)
		if slices.Contains(avoid, p) {
			continue
		}
		var held []net.Listener
		ok := true
		for _, h := range hosts {
			ln, err := net.Listen("tcp4", net.JoinHostPort(h, strconv.Itoa(p)))
			if err != nil {
				if !errors.Is(err, syscall.EADDRINUSE) {
					for _, l := range held {
						l.Close()
					}
					return 0, nil, err
				}
				ok = false
				break
			}
			held = append(held, ln)
		}
		if !ok {
			for _, l := range held {
				l.Close()
			}
			continue
		}
		for _, l := range held[:len(held)-1] {
			l.Close()
		}
		return p, held[len(held)-1], nil
	}
	return 0, nil, fmt.Errorf("no TCP port in %d-%d free on %v", lo, hi, hosts)
}

// lowPortRange is [20000, start of the ephemeral range − 1], as
// internal/testutil picks ports for tests, or 1024 up where that is too
// narrow.
func lowPortRange() (lo, hi int) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 1024 {
				low = n
			}
		}
	}
	if low-20000 >= 1000 {
		return 20000, low - 1
	}
	return 1024, max(low-1, 2024)
}

// pollAccept dials 127.0.0.1:port until a connect succeeds or deadline;
// it returns the connection and when it was established.
func pollAccept(port int, deadline time.Time) (net.Conn, time.Time, int, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d := net.Dialer{Timeout: time.Second}
	tries := 0
	for {
		tries++
		c, err := d.Dial("tcp4", addr)
		if err == nil {
			return c, time.Now(), tries, nil
		}
		if time.Now().After(deadline) {
			return nil, time.Time{}, tries, fmt.Errorf("port %d not accepting after %d tries: %w", port, tries, err)
		}
		time.Sleep(pollSleep)
	}
}

// pollRefused dials 127.0.0.1:port until a connect is refused or deadline.
func pollRefused(port int, deadline time.Time) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		c, err := net.DialTimeout("tcp4", addr, time.Second)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil
		case errors.Is(err, syscall.ECONNRESET):
			// The listener closed while this connect was in its queue: try
			// again, the next one must be refused.
		case err != nil:
			return fmt.Errorf("dialling removed port %d: %w", port, err)
		default:
			c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("removed port %d still accepting after %v", port, portChangeDeadline)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echoOn does one echo round trip on c, a fresh connection to the edge.
func echoOn(c net.Conn) error {
	msg := make([]byte, requestLen+echoLen)
	msg[0] = roleEcho
	for i := requestLen; i < len(msg); i++ {
		msg[i] = byte(i)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, echoLen)
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if string(buf) != string(msg[requestLen:]) {
		return errors.New("echo came back changed")
	}
	return nil
}

// portChangeSample is one change's timings, in milliseconds.
type portChangeSample struct {
	Port           int     `json:"port"`
	Removed        int     `json:"removedPort,omitempty"`
	AnswerMs       float64 `json:"requestToAnswerMs"`
	AcceptMs       float64 `json:"answerToAcceptMs"`
	EventMs        float64 `json:"answerToPortsAssignedMs"`
	Tries          int     `json:"connectTries"`
	RemovedRefused bool    `json:"removedRefused"`
}

// measurePortChange is the port-change row (tunnel only).
func (b *bench) measurePortChange(m *mode) error {
	if m.hub == nil {
		return nil
	}
	own := m.tgt.port()
	used := []int{own}
	var (
		samples []portChangeSample
		lat     []float64
		refused int
		prev    int
		prevTgt *target
		errs    []string
	)
	defer func() {
		if prevTgt != nil {
			prevTgt.close()
		}
	}()
	checkRemoved := func(port int, s *portChangeSample) {
		if err := pollRefused(port, time.Now().Add(portChangeDeadline)); err != nil {
			errs = append(errs, err.Error())
			return
		}
		refused++
		if s != nil {
			s.RemovedRefused = true
		}
	}
	for i := range b.cfg.PortChanges {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		// The new port must be free on the edge's listen host and on the
		// target host, where a target listens on it from now on.
		p, ln, err := freeLowPort([]string{"127.0.0.1", "127.0.0.2"}, used)
		if err != nil {
			return err
		}
		used = append(used, p)
		tgt := serveTarget(ln, true)
		s := portChangeSample{Port: p, Removed: prev}
		events0 := m.edge.eventCount("portsAssigned")
		t0 := time.Now()
		if err := m.updateEdge(map[string]any{"listenPorts": []int{own, p}}); err != nil {
			tgt.close()
			return fmt.Errorf("change %d: %w", i+1, err)
		}
		answered := time.Now()
		c, acceptAt, tries, err := pollAccept(p, answered.Add(portChangeDeadline))
		if err != nil {
			tgt.close()
			return fmt.Errorf("change %d: %w", i+1, err)
		}
		s.AnswerMs = ms(answered.Sub(t0))
		s.AcceptMs = ms(acceptAt.Sub(answered))
		s.Tries = tries
		lat = append(lat, s.AcceptMs)
		err = echoOn(c)
		c.Close()
		if err != nil {
			errs = append(errs, fmt.Sprintf("change %d: port %d accepted, but %v", i+1, p, err))
		}
		if at, err := m.edge.eventAfter("portsAssigned", events0, portChangeDeadline); err != nil {
			errs = append(errs, fmt.Sprintf("change %d: %v", i+1, err))
		} else {
			s.EventMs = ms(at.Sub(answered))
		}
		if prev != 0 {
			checkRemoved(prev, &s)
			prevTgt.close()
		}
		prev, prevTgt = p, tgt
		samples = append(samples, s)
	}
	// Back to the edge's own port alone: the last new port is removed too.
	finalRefused := false
	if prev != 0 {
		if err := m.updateEdge(map[string]any{"listenPorts": []int{own}}); err != nil {
			return err
		}
		before := refused
		checkRemoved(prev, nil)
		finalRefused = refused > before
	}
	// The unchanged port never noticed.
	if c, err := openEcho(b.ctx, m.addr); err != nil {
		errs = append(errs, fmt.Sprintf("the unchanged port %d after the changes: %v", own, err))
	} else {
		c.Close()
	}
	sorted := slices.Clone(lat)
	sort.Float64s(sorted)
	b.res.detail(m.name, "portChange", map[string]any{"changes": samples, "pollSleepUs": pollSleep.Microseconds(),
		"removedRefused": refused, "removed": len(samples), "lastRemovedRefused": finalRefused, "errors": errs,
		"note": "answerToAcceptMs counts from the updateAllowedEdges answer; the edge may bind the port before that answer arrives (connectTries 1, a negative answerToPortsAssignedMs), then it is one connect's time"})
	for _, e := range errs {
		b.res.problem("port change: %s", e)
	}
	if len(sorted) == 0 {
		return errors.New("no port change measured")
	}
	b.res.set("port_change_p50_ms", m.name, quantile(sorted, 0.50))
	b.res.set("port_change_p90_ms", m.name, quantile(sorted, 0.90))
	b.res.set("port_change_max_ms", m.name, sorted[len(sorted)-1])
	b.res.set("port_change_removed_refused", m.name, float64(refused))
	return nil
}

// quantile is the q-quantile of sorted (nearest rank).
func quantile(sorted []float64, q float64) float64 {
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/internal/netstat"
)

// The UDP rows (issue 12): round trip, rate at ≤ 1% loss, memory per idle
// flow and TCP beside a UDP flood. They run on set-ups of their own, made
// for the row and stopped after it: a hub and an edge with a UDP port
// (udpProxyProtocol "none"), a chain of two udp-relay processes, and
// direct; all end at one UDP target in the bench process.

// udpSize is the datagram size of the UDP rows, udpSmall that of the
// small-datagram round trips (the two sizes of PEERS.md's UDP rows).
const (
	udpSize  = 1200
	udpSmall = 64
)

// udpFlows is the flow count of the many-flows round-trip row, and
// udpOfferedRate the datagrams per second of the offered-load row.
const (
	udpFlows       = 50
	udpOfferedRate = 100000
)

// The first byte of a bench datagram says what the UDP target does with it.
const (
	udpEcho = 'E' // send it back
	udpSink = 'S' // count it under its run id (bytes 1–8)
)

// proxyV2Sig starts a PROXY v2 header; the target drops such datagrams (the
// rows run with udpProxyProtocol "none", so none should come).
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// udpTarget echoes or counts the bench's datagrams.
type udpTarget struct {
	pc      *net.UDPConn
	mu      sync.Mutex
	counts  map[uint64]int64 // sink datagrams by run id
	headers atomic.Int64
	done    chan struct{}
}

// listenUDPTarget starts the UDP target on addr with a receive buffer of
// rcvbuf bytes (0: the kernel's default).
func listenUDPTarget(addr string, rcvbuf int) (*udpTarget, error) {
	la, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp4", la)
	if err != nil {
		return nil, err
	}
	if rcvbuf > 0 {
		pc.SetReadBuffer(rcvbuf)
	}
	t := &udpTarget{pc: pc, counts: map[uint64]int64{}, done: make(chan struct{})}
	go t.serve()
	return t, nil
}

func (t *udpTarget) port() int { return t.pc.LocalAddr().(*net.UDPAddr).Port }

func (t *udpTarget) serve() {
	defer close(t.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := t.pc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil || n == 0 {
			continue
		}
		switch {
		case bytes.HasPrefix(buf[:n], proxyV2Sig):
			t.headers.Add(1)
		case buf[0] == udpEcho:
			t.pc.WriteToUDPAddrPort(buf[:n], from)
		case buf[0] == udpSink && n >= 9:
			id := binary.BigEndian.Uint64(buf[1:9])
			t.mu.Lock()
			t.counts[id]++
			t.mu.Unlock()
		}
	}
}

// received is how many sink datagrams of run id arrived.
func (t *udpTarget) received(id uint64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts[id]
}

func (t *udpTarget) close() {
	t.pc.Close()
	<-t.done
}

var udpRunID atomic.Uint64

// setupUDPTunnel starts a hub (udpProxyProtocol "none", udpIdleTimeoutSecs
// 600) and an edge on transport ("tls" or "quic") listening on host:P for
// UDP, P being the port of the UDP target on 127.0.0.2, and, when tcp, on
// the TCP port of a new PROXY-parsing TCP target (for the fairness row's
// bulk stream). The set-up is mode name.
func setupUDPTunnel(kids *children, bin, name, suffix, host, transport string, utgt *udpTarget, tcp bool) (*mode, error) {
	secretBytes := make([]byte, 24)
	rand.Read(secretBytes)
	secret := hex.EncodeToString(secretBytes)
	stunPort, err := closedUDPPort()
	if err != nil {
		return nil, err
	}
	m := &mode{name: name, secret: secret, info: map[string]any{}}
	fail := func(err error) (*mode, error) {
		stopUDPSetup(m)
		return nil, err
	}
	hub, err := startMgmt(kids, "hub"+suffix, bin)
	if err != nil {
		return nil, err
	}
	m.hub, m.procs = hub, []*child{hub.child}
	if _, err := hub.call("updateAllowedEdges", map[string]any{
		"edges": []map[string]string{{"id": tunnelEdgeID, "secret": secret}},
	}, 10*time.Second); err != nil {
		return fail(err)
	}
	raw, err := hub.call("startHub", map[string]any{
		"tunnelPort": 0, "targetHost": "127.0.0.2", "listenHost": "127.0.0.1",
		"udpProxyProtocol": "none", "udpIdleTimeoutSecs": 600,
	}, 10*time.Second)
	if err != nil {
		return fail(err)
	}
	var hr struct {
		TunnelPort int `json:"tunnelPort"`
	}
	if err := json.Unmarshal(raw, &hr); err != nil || hr.TunnelPort == 0 {
		return fail(fmt.Errorf("startHub answered %s", raw))
	}
	edge, err := startMgmt(kids, "edge"+suffix, bin)
	if err != nil {
		return fail(err)
	}
	m.edge, m.procs = edge, append(m.procs, edge.child)
	tcpPorts := []int{}
	if tcp {
		if m.tgt, err = listenTarget("127.0.0.2:0", true); err != nil {
			return fail(err)
		}
		tcpPorts = append(tcpPorts, m.tgt.port())
	}
	if _, err := edge.call("startEdge", map[string]any{
		"hubHost": "127.0.0.1", "hubPort": hr.TunnelPort,
		"edgeId": tunnelEdgeID, "secret": secret,
		"listenPorts": tcpPorts, "listenPortsUdp": []int{utgt.port()}, "listenHost": host, "transport": transport,
		"udpIdleTimeoutSecs": 600,
		"stunServer":         "127.0.0.1:" + strconv.Itoa(stunPort), "stunIntervalSecs": 300,
	}, 10*time.Second); err != nil {
		return fail(err)
	}
	if err := hub.waitEvent("edgeConnected", 1, 15*time.Second); err != nil {
		return fail(err)
	}
	if err := edge.waitEvent("tunnelConnected", 1, 15*time.Second); err != nil {
		return fail(err)
	}
	raw, err = edge.call("getEdgeStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return fail(err)
	}
	var es struct {
		Transport string `json:"transport"`
	}
	if err := json.Unmarshal(raw, &es); err != nil || es.Transport != transport {
		return fail(fmt.Errorf("the edge's tunnel is on %q, not %q", es.Transport, transport))
	}
	m.addr = net.JoinHostPort(host, strconv.Itoa(utgt.port()))
	m.info = map[string]any{"edgeListenUdp": m.addr, "hubTunnel": net.JoinHostPort("127.0.0.1", strconv.Itoa(hr.TunnelPort)), "transport": transport,
		"hubPid": hub.pid(), "edgePid": edge.pid(), "udpProxyProtocol": "none", "udpIdleTimeoutSecs": 600}
	if m.tgt != nil {
		m.info["edgeListenTcp"] = net.JoinHostPort(host, strconv.Itoa(m.tgt.port()))
	}
	return m, nil
}

// tcpAddr is where the fairness row's TCP stream enters a UDP set-up.
func (m *mode) tcpAddr() string {
	if m.hub == nil {
		return m.tgt.ln.Addr().String()
	}
	host, _, _ := net.SplitHostPort(m.addr) // the edge's listen host
	return net.JoinHostPort(host, strconv.Itoa(m.tgt.port()))
}

// stopUDPSetup stops a UDP set-up's processes and its TCP target.
func stopUDPSetup(m *mode) {
	if m.edge != nil {
		_, _ = m.edge.call("stopEdge", map[string]any{}, 10*time.Second)
	}
	if m.hub != nil {
		_, _ = m.hub.call("stopHub", map[string]any{}, 10*time.Second)
	}
	for _, p := range m.procs {
		p.stop()
	}
	if m.tgt != nil {
		m.tgt.close()
	}
}

// udpEdgeStatus reads the edge's activeUdpFlows and udpDatagramsDropped and
// the hub's activeUdpFlows.
func udpStatus(m *mode) (edgeFlows, hubFlows int, dropped uint64, err error) {
	raw, err := m.edge.call("getEdgeStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return 0, 0, 0, err
	}
	var es struct {
		ActiveUDPFlows      int    `json:"activeUdpFlows"`
		UDPDatagramsDropped uint64 `json:"udpDatagramsDropped"`
	}
	if err := json.Unmarshal(raw, &es); err != nil {
		return 0, 0, 0, err
	}
	raw, err = m.hub.call("getHubStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return 0, 0, 0, err
	}
	var hs hubUDPStatus
	if err := json.Unmarshal(raw, &hs); err != nil {
		return 0, 0, 0, err
	}
	for _, e := range hs.ConnectedEdges {
		hubFlows += e.ActiveUDPFlows
	}
	return es.ActiveUDPFlows, hubFlows, es.UDPDatagramsDropped, nil
}

// hubUDPStatus is what the UDP rows read of getHubStatus.
type hubUDPStatus struct {
	ConnectedEdges []struct {
		ActiveUDPFlows      int    `json:"activeUdpFlows"`
		UDPDatagramsDropped uint64 `json:"udpDatagramsDropped"`
	} `json:"connectedEdges"`
}

// hubUDPDropped is the hub's udpDatagramsDropped over its edges.
func hubUDPDropped(m *mode) (uint64, error) {
	raw, err := m.hub.call("getHubStatus", map[string]any{}, 10*time.Second)
	if err != nil {
		return 0, err
	}
	var hs hubUDPStatus
	if err := json.Unmarshal(raw, &hs); err != nil {
		return 0, err
	}
	var n uint64
	for _, e := range hs.ConnectedEdges {
		n += e.UDPDatagramsDropped
	}
	return n, nil
}

// udpSetups makes the UDP target and the set-ups of cfg.Modes for it (the
// relay is the udp-relay chain); done stops them all.
func (b *bench) udpSetups(suffix string, tcp bool) (modes []*mode, utgt *udpTarget, done func(), err error) {
	utgt, err = listenUDPTarget("127.0.0.2:0", b.cfg.UDPTargetRcvbuf)
	if err != nil {
		return nil, nil, nil, err
	}
	done = func() {
		for _, m := range modes {
			stopUDPSetup(m)
		}
		utgt.close()
	}
	// The tunnel first: its edge must bind 127.0.0.1:P for the target's
	// 127.0.0.2:P, and if P is taken there it retries with a new target.
	var tunnel *mode
	if slices.Contains(b.cfg.Modes, modeTunnel) {
		for attempt := 0; ; attempt++ {
			tunnel, err = setupUDPTunnel(b.kids, b.cfg.Bin, modeTunnel, suffix, "127.0.0.1", "tls", utgt, tcp)
			if err == nil || attempt == 3 || !strings.Contains(err.Error(), "listen") {
				break
			}
			utgt.close()
			if utgt, err = listenUDPTarget("127.0.0.2:0", b.cfg.UDPTargetRcvbuf); err != nil {
				return nil, nil, nil, err
			}
		}
		if err != nil {
			done()
			return nil, nil, nil, fmt.Errorf("UDP tunnel: %w", err)
		}
	}
	for _, name := range b.cfg.Modes {
		var m *mode
		switch name {
		case modeDirect:
			m = &mode{name: modeDirect, addr: utgt.pc.LocalAddr().String(), info: map[string]any{}}
			if tcp {
				m.tgt, err = listenTarget("127.0.0.2:0", false)
			}
		case modeRelay:
			m, err = setupUDPRelay(b.kids, utgt.pc.LocalAddr().String())
		case modeTunnel:
			m = tunnel
		case modeTunnelQUIC: // its edge on 127.0.0.4:P, to the same target
			m, err = setupUDPTunnel(b.kids, b.cfg.Bin, modeTunnelQUIC, suffix+"-quic", "127.0.0.4", "quic", utgt, false)
		}
		if err != nil {
			done()
			if tunnel != nil && name != modeTunnel {
				stopUDPSetup(tunnel)
			}
			return nil, nil, nil, fmt.Errorf("UDP %s: %w", name, err)
		}
		modes = append(modes, m)
	}
	return modes, utgt, done, nil
}

// udpDialEach is a client socket toward each set-up, by its name; closeAll
// closes them.
func udpDialEach(modes []*mode) (conns map[string]*net.UDPConn, closeAll func(), err error) {
	conns = map[string]*net.UDPConn{}
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, m := range modes {
		c, err := udpDial(m.addr)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns[m.name] = c
	}
	return conns, closeAll, nil
}

// udpDial is a connected client socket toward addr.
func udpDial(addr string) (*net.UDPConn, error) {
	ra, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp4", nil, ra)
	if err != nil {
		return nil, err
	}
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
	return c, nil
}

// measureUDP runs the round-trip, rate and fairness rows on UDP set-ups of
// their own (it is called for the tunnel set-up only).
func (b *bench) measureUDP(orig *mode) error {
	if orig.name != modeTunnel {
		return nil
	}
	modes, utgt, done, err := b.udpSetups("-udp", true)
	if err != nil {
		return err
	}
	defer done()
	var errs []error
	part := func(p string) bool { return slices.Contains(b.cfg.UDPParts, p) }
	if part("rtt") {
		if err := b.udpRoundTrips(modes, udpSize, "udp_rtt"); err != nil {
			errs = append(errs, fmt.Errorf("round trips: %w", err))
		}
		if err := b.udpRoundTrips(modes, udpSmall, "udp_rtt64"); err != nil {
			errs = append(errs, fmt.Errorf("round trips, %d B: %w", udpSmall, err))
		}
	}
	if part("flows") {
		if err := b.udpFlowRoundTrips(modes); err != nil {
			errs = append(errs, fmt.Errorf("%d flows: %w", udpFlows, err))
		}
	}
	if part("offered") {
		if err := b.udpOffered(modes, utgt); err != nil {
			errs = append(errs, fmt.Errorf("offered %d/s: %w", udpOfferedRate, err))
		}
	}
	if part("rate") {
		if err := b.udpRates(modes, utgt); err != nil {
			errs = append(errs, fmt.Errorf("rate: %w", err))
		}
	}
	if part("fair") {
		if err := b.udpFairness(modes, utgt); err != nil {
			errs = append(errs, fmt.Errorf("fairness: %w", err))
		}
	}
	if h := utgt.headers.Load(); h > 0 {
		b.res.problem("UDP rows: the target got %d PROXY v2 headers with udpProxyProtocol \"none\"", h)
	}
	return errors.Join(errs...)
}

// udpRoundTrips: one flow per set-up, echo round trips of size-byte
// datagrams, in alternating rounds; a datagram without its reply within
// 200 ms counts as lost. The rows are key+"_p50_us" and key+"_p90_us".
func (b *bench) udpRoundTrips(modes []*mode, size int, key string) error {
	n, rounds := 5000, 4
	if b.cfg.Quick {
		n, rounds = 500, 1
	}
	samples := map[string][]time.Duration{}
	lost := map[string]int{}
	conns, closeAll, err := udpDialEach(modes)
	if err != nil {
		return err
	}
	defer closeAll()
	out := make([]byte, size)
	in := make([]byte, 65536)
	out[0] = udpEcho
	for round := 0; round < rounds; round++ {
		for _, m := range modes {
			c := conns[m.name]
			for i := 0; i < n && b.ctx.Err() == nil; i++ {
				seq := uint64(round*n + i)
				binary.BigEndian.PutUint64(out[1:], seq)
				t0 := time.Now()
				if _, err := c.Write(out); err != nil {
					return err
				}
				c.SetReadDeadline(t0.Add(200 * time.Millisecond))
				for {
					k, err := c.Read(in)
					if err != nil {
						lost[m.name]++
						break
					}
					if k == size && binary.BigEndian.Uint64(in[1:]) == seq {
						samples[m.name] = append(samples[m.name], time.Since(t0))
						break
					}
				}
			}
		}
	}
	for _, m := range modes {
		ds := samples[m.name]
		if len(ds) == 0 {
			b.res.problem("UDP round trip, %s: no replies", m.name)
			continue
		}
		p50, _ := percentiles(ds)
		p90 := float64(ds[min(len(ds)-1, len(ds)*9/10)]) / float64(time.Microsecond)
		b.res.set(key+"_p50_us", m.name, p50)
		b.res.set(key+"_p90_us", m.name, p90)
		b.res.detail(m.name, fmt.Sprintf("udpRoundTrip%dB", size), map[string]any{"roundTrips": len(ds), "lost": lost[m.name], "rounds": rounds})
		if lost[m.name] > 0 {
			b.res.problem("UDP round trip %d B, %s: %d of %d datagrams got no reply within 200 ms", size, m.name, lost[m.name], n*rounds)
		}
	}
	return nil
}

// udpOffer sends 1200-byte sink datagrams to addr at rate per second for d
// (in bursts every millisecond) and returns how many it sent and how many
// the target received 300 ms after the last.
func (b *bench) udpOffer(c *net.UDPConn, utgt *udpTarget, rate float64, d time.Duration) (sent, got int64) {
	id := udpRunID.Add(1)
	out := make([]byte, udpSize)
	out[0] = udpSink
	binary.BigEndian.PutUint64(out[1:], id)
	start := time.Now()
	for b.ctx.Err() == nil {
		el := time.Since(start)
		if el >= d {
			break
		}
		due := int64(rate * el.Seconds())
		for sent < due {
			if _, err := c.Write(out); err != nil {
				break // ENOBUFS or a refused port: the datagram is lost
			}
			sent++
		}
		time.Sleep(time.Until(start.Add(el.Truncate(time.Millisecond) + time.Millisecond)))
	}
	time.Sleep(300 * time.Millisecond)
	return sent, utgt.received(id)
}

// udpRates finds, per set-up, the highest offered rate of 1200-byte
// datagrams (one flow) that arrives with ≤ 1% loss: the rate doubles from
// 5 000/s until a trial loses more, then a 4-step bisection between the
// last good and the first bad rate narrows it to 1/16 of the step. The
// set-ups take turns trial by trial, so they see the same machine.
func (b *bench) udpRates(modes []*mode, utgt *udpTarget) error {
	trial, maxRate := time.Second, 640000.0
	if b.cfg.Quick {
		trial = 200 * time.Millisecond
	}
	type search struct {
		m               *mode
		c               *net.UDPConn
		good, bad, next float64
		bisect          int
		achieved        map[float64]float64 // offered rate → what the client managed to send
		trials          []map[string]any
	}
	conns, closeAll, err := udpDialEach(modes)
	if err != nil {
		return err
	}
	defer closeAll()
	var all []*search
	for _, m := range modes {
		all = append(all, &search{m: m, c: conns[m.name], next: 5000, achieved: map[float64]float64{}})
	}
	for more := true; more && b.ctx.Err() == nil; {
		more = false
		for _, s := range all {
			if s.next == 0 {
				continue
			}
			more = true
			m, rate := s.m, s.next
			var drop0, drop1 uint64
			if m.edge != nil {
				_, _, drop0, _ = udpStatus(m)
			}
			rcv0 := netstat.UDPRcvbufErrors()
			sent, got := b.udpOffer(s.c, utgt, rate, trial)
			rcvErrs := netstat.UDPRcvbufErrors() - rcv0
			if m.edge != nil {
				_, _, drop1, _ = udpStatus(m)
			}
			s.achieved[rate] = float64(sent) / trial.Seconds()
			loss := 1.0
			if sent > 0 {
				loss = 1 - float64(got)/float64(sent)
			}
			s.trials = append(s.trials, map[string]any{"offeredPps": rate, "sent": sent, "received": got, "loss": loss,
				"edgeDropped": drop1 - drop0, "socketBufferDrops": rcvErrs})
			if sent > 0 && loss <= 0.01 {
				s.good = rate
			} else {
				s.bad = rate
			}
			switch {
			case s.bad == 0 && rate*2 <= maxRate:
				s.next = rate * 2
			case s.bad == 0:
				s.next = 0
				b.res.note("UDP rate, %s: no loss above 1%% up to %.0f datagrams/s, the most the row offers", m.name, maxRate)
			case s.bisect < 4:
				s.bisect++
				s.next = (s.good + s.bad) / 2
			default:
				s.next = 0
			}
		}
	}
	for _, s := range all {
		if s.good == 0 {
			b.res.problem("UDP rate, %s: more than 1%% loss already at 5 000 datagrams/s", s.m.name)
		}
		pps := min(s.good, s.achieved[s.good]) // the client may fall short of the rate asked
		b.res.set("udp_rate_pps", s.m.name, pps)
		b.res.set("udp_rate_mbps", s.m.name, pps*udpSize*8/1e6)
		b.res.detail(s.m.name, "udpRate", map[string]any{"trialSeconds": trial.Seconds(), "trials": s.trials,
			"socketBufferDrops": "/proc/net/snmp Udp RcvbufErrors during the trial: the network namespace's, every socket on the way"})
	}
	return b.ctx.Err()
}

// udpFairness: a TCP bulk stream (client→target) alone and beside a UDP
// flood (1200-byte datagrams sent as fast as one socket can, to the same
// edge) in alternating rounds; the ratio of the totals, and the datagrams
// the edge dropped during the flooded rounds. Direct is the same on the
// targets themselves: what the flood's CPU alone costs the stream on this
// machine. For the tunnel each round also floods a socket on the machine
// that nobody reads (the kernel drops what its buffer cannot hold) beside
// the stream: what the flood's sender alone takes from the tunnel's stream,
// the tunnel doing nothing for it.
func (b *bench) udpFairness(modes []*mode, utgt *udpTarget) error {
	d, rounds := 3*time.Second, 3
	if b.cfg.Quick {
		d, rounds = 500*time.Millisecond, 1
	}
	for _, m := range modes {
		if m.tgt == nil {
			continue // the UDP relay carries no TCP
		}
		var unread *net.UDPConn
		if m.edge != nil {
			var err error
			if unread, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
				return err
			}
			unread.SetReadBuffer(4 << 20) // as the edge's
			defer unread.Close()
		}
		var alone, beside, besideUnread []float64
		var flooded, floodGot int64
		var dropped uint64
		var cpuAlone, cpuBeside float64 // the set-up's own processes
		var bytesAlone, bytesBeside int64
		var senderCPU, senderCPUUnread float64 // the flood's sending thread
		cpu := func() float64 { v, _, _ := m.cpuSeconds(); return v }
		for r := 0; r < rounds && b.ctx.Err() == nil; r++ {
			c0 := cpu()
			n, el, err := bulkUp(b.ctx, m.tcpAddr(), d)
			if err != nil {
				return fmt.Errorf("%s, TCP alone: %w", m.name, err)
			}
			alone = append(alone, gbps(n, el))
			cpuAlone += cpu() - c0
			bytesAlone += n

			var drop0 uint64
			if m.edge != nil {
				if _, _, drop0, err = udpStatus(m); err != nil {
					return err
				}
			}
			f, err := b.floodBeside(m, m.addr, d, cpu)
			cpuBeside += f.cpu
			if err != nil {
				return fmt.Errorf("%s, TCP beside the flood: %w", m.name, err)
			}
			beside = append(beside, gbps(f.n, f.el))
			bytesBeside += f.n
			senderCPU += f.senderCPU
			time.Sleep(300 * time.Millisecond)
			flooded += f.sent
			floodGot += utgt.received(f.id)
			if m.edge != nil {
				_, _, drop1, err := udpStatus(m)
				if err != nil {
					return err
				}
				dropped += drop1 - drop0
			}
			if unread != nil {
				f, err := b.floodBeside(m, unread.LocalAddr().String(), d, cpu)
				if err != nil {
					return fmt.Errorf("%s, TCP beside the flood to an unread socket: %w", m.name, err)
				}
				besideUnread = append(besideUnread, gbps(f.n, f.el))
				senderCPUUnread += f.senderCPU
			}
		}
		if len(alone) == 0 {
			return b.ctx.Err()
		}
		ratio := mean(beside) / mean(alone)
		b.res.set("udp_fair_tcp_ratio", m.name, ratio)
		floodSecs := float64(len(beside)) * (d + 100*time.Millisecond).Seconds()
		b.res.set("udp_fair_flood_pps", m.name, float64(flooded)/floodSecs)
		b.res.set("udp_fair_delivered_pps", m.name, float64(floodGot)/floodSecs)
		b.res.set("udp_fair_sender_cores", m.name, senderCPU/floodSecs)
		detail := map[string]any{"tcpAloneGbps": alone, "tcpBesideFloodGbps": beside,
			"roundSeconds": d.Seconds(), "floodSent": flooded, "floodReceived": floodGot, "edgeDropped": dropped,
			"ownCpuSecondsAlone": cpuAlone, "ownCpuSecondsBeside": cpuBeside,
			"floodSenderCpuSeconds": senderCPU, "floodSeconds": floodSecs}
		if m.edge != nil {
			b.res.set("udp_fair_dropped", m.name, float64(dropped))
			if cpuAlone > 0 && bytesAlone > 0 && bytesBeside > 0 {
				// What the flood costs the tunnel itself: its processes' CPU per
				// GB of the stream. (The rest of the ratio's loss is the CPU the
				// flood's sender takes from everything else on the machine.)
				perAlone, perBeside := cpuAlone/(float64(bytesAlone)/1e9), cpuBeside/(float64(bytesBeside)/1e9)
				b.res.set("udp_fair_cpu_ratio", m.name, perBeside/perAlone)
				detail["ownCpuSecondsPerGBAlone"], detail["ownCpuSecondsPerGBBeside"] = perAlone, perBeside
			}
		}
		if len(besideUnread) > 0 {
			b.res.set("udp_fair_unread_tcp_ratio", m.name, mean(besideUnread)/mean(alone))
			b.res.set("udp_fair_unread_sender_cores", m.name, senderCPUUnread/(float64(len(besideUnread))*(d+100*time.Millisecond).Seconds()))
			detail["tcpBesideFloodToUnreadSocketGbps"] = besideUnread
			detail["floodToUnreadSocketSenderCpuSeconds"] = senderCPUUnread
		}
		b.res.detail(m.name, "udpFairness", detail)
	}
	return nil
}

// floodResult is one bulk transfer beside a flood.
type floodResult struct {
	n         int64         // the stream's bytes
	el        time.Duration // and time
	sent      int64         // datagrams sent
	id        uint64        // their run id at the target
	senderCPU float64       // the sending thread's CPU seconds
	cpu       float64       // what cpu counted during the stream
}

// floodBeside floods addr with 1200-byte datagrams as fast as one socket
// can, from 100 ms before a bulk stream through m for d until its end.
func (b *bench) floodBeside(m *mode, addr string, d time.Duration, cpu func() float64) (floodResult, error) {
	var f floodResult
	c, err := udpDial(addr)
	if err != nil {
		return f, err
	}
	defer c.Close()
	f.id = udpRunID.Add(1)
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The sender's own thread, so that its CPU time is its own.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c0, err := threadCPUSeconds()
		defer func() {
			if c1, err1 := threadCPUSeconds(); err == nil && err1 == nil {
				f.senderCPU = c1 - c0 // read after wg.Wait
			}
		}()
		out := make([]byte, udpSize)
		out[0] = udpSink
		binary.BigEndian.PutUint64(out[1:], f.id)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 64; i++ {
				if _, err := c.Write(out); err == nil {
					sent.Add(1)
				}
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	c0 := cpu()
	f.n, f.el, err = bulkUp(b.ctx, m.tcpAddr(), d)
	f.cpu = cpu() - c0
	close(stop)
	wg.Wait()
	f.sent = sent.Load()
	return f, err
}

// measureUDPMemory holds cfg-sized idle flows (10 000; quick 1 000), each
// from its own client socket and after one echo round trip, through fresh
// hub and edge processes, and reports (RSS after − RSS before) / flows for
// each of them, in the steady state (steadyRSS).
func (b *bench) measureUDPMemory(orig *mode) error {
	if orig.name != modeTunnel {
		return nil
	}
	flows := 10000
	if b.cfg.Quick {
		flows = 1000
	}
	utgt, err := listenUDPTarget("127.0.0.2:0", b.cfg.UDPTargetRcvbuf)
	if err != nil {
		return err
	}
	defer utgt.close()
	var m *mode
	for attempt := 0; ; attempt++ {
		m, err = setupUDPTunnel(b.kids, b.cfg.Bin, modeTunnel, "-udpmem", "127.0.0.1", "tls", utgt, false)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "listen") {
			break
		}
		utgt.close()
		if utgt, err = listenUDPTarget("127.0.0.2:0", b.cfg.UDPTargetRcvbuf); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	defer stopUDPSetup(m)
	time.Sleep(time.Second) // the fresh processes' idle state
	_, base, err := m.rssKiB()
	if err != nil {
		return err
	}
	// Capacity: the bench holds one socket per flow, the hub one.
	capacity := int(b.nofile.Cur) - fdReserveBench
	if lim, err := openFilesLimit(m.hub.pid()); err == nil {
		capacity = min(capacity, int(lim)-fdReserveChild)
	}
	if capacity < flows {
		b.res.note("UDP memory: RLIMIT_NOFILE allows %d flows, not %d; the row reports the %d", capacity, flows, capacity)
		flows = capacity
	}
	socks := make([]*net.UDPConn, 0, flows)
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	ra, _ := net.ResolveUDPAddr("udp4", m.addr)
	out := make([]byte, udpSize)
	out[0] = udpEcho
	in := make([]byte, 65536)
	replies := 0
	// In batches of 500: send one datagram from each new socket, then read
	// the replies (at most 2 s for a batch), so the flows open at a rate the
	// tunnel's queue takes.
	for len(socks) < flows && b.ctx.Err() == nil {
		first := len(socks)
		for len(socks) < flows && len(socks)-first < 500 {
			c, err := net.DialUDP("udp4", nil, ra)
			if err != nil {
				return fmt.Errorf("client socket %d: %w", len(socks), err)
			}
			socks = append(socks, c)
			c.Write(out)
		}
		deadline := time.Now().Add(2 * time.Second)
		for _, c := range socks[first:] {
			c.SetReadDeadline(deadline)
			if n, err := c.Read(in); err == nil && n == udpSize {
				replies++
			}
		}
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	var ef, hf int
	deadline := time.Now().Add(10 * time.Second)
	for {
		ef, hf, _, err = udpStatus(m)
		if err != nil {
			return err
		}
		if (ef == flows && hf == flows) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ef != flows || hf != flows {
		b.res.problem("UDP memory: holding %d flows, the edge reports %d and the hub %d", flows, ef, hf)
	}
	if replies < flows {
		b.res.problem("UDP memory: %d of %d flows got their echo reply", replies, flows)
	}
	_, each, err := b.steadyRSS(m)
	if err != nil {
		return err
	}
	for _, p := range m.procs {
		side := strings.TrimSuffix(p.name, "-udpmem")
		b.res.set("udp_mem_"+side+"_kib_per_flow", modeTunnel, float64(each[p.name]-base[p.name])/float64(flows))
	}
	b.res.set("udp_mem_flows", modeTunnel, float64(min(ef, hf)))
	b.res.detail(modeTunnel, "udpMemory", map[string]any{"flows": flows, "replies": replies, "edgeFlows": ef, "hubFlows": hf,
		"baseRssKiB": base, "rssKiB": each})
	return nil
}

// udpRowDefs are the UDP rows of the table.
func udpRowDefs() []rowDef {
	tun := []string{modeTunnel}
	dt := []string{modeDirect, modeTunnel}
	rows := []rowDef{
		{Key: "udp_rtt_p50_us", Label: "UDP round trip, 1 flow, 1200 B, p50", Unit: "µs", Better: "lower", decimals: 1, quic: true},
		{Key: "udp_rtt_p90_us", Label: "UDP round trip, 1 flow, 1200 B, p90", Unit: "µs", Better: "lower", decimals: 1, quic: true},
		{Key: "udp_rtt64_p50_us", Label: "UDP round trip, 1 flow, 64 B, p50", Unit: "µs", Better: "lower", decimals: 1, quic: true},
		{Key: "udp_rtt64_p90_us", Label: "UDP round trip, 1 flow, 64 B, p90", Unit: "µs", Better: "lower", decimals: 1, quic: true},
		{Key: "udp_rate_pps", Label: "UDP rate at ≤1% loss, 1 flow, 1200 B", Unit: "dgram/s", Better: "higher", decimals: 0, quic: true},
		{Key: "udp_rate_mbps", Label: "UDP rate at ≤1% loss, 1 flow, 1200 B", Unit: "Mbit/s", Better: "higher", decimals: 0, quic: true},
	}
	rows = append(rows, udpLoadRowDefs()...)
	return append(rows, []rowDef{
		{Key: "udp_mem_hub_kib_per_flow", Label: "UDP memory per idle flow, hub", Unit: "KiB", Better: "lower", decimals: 2, modes: tun},
		{Key: "udp_mem_edge_kib_per_flow", Label: "UDP memory per idle flow, edge", Unit: "KiB", Better: "lower", decimals: 2, modes: tun},
		{Key: "udp_mem_flows", Label: "UDP memory, idle flows held", Unit: "flows", Better: "higher", decimals: 0, modes: tun},
		{Key: "udp_fair_tcp_ratio", Label: "UDP flood: TCP stream beside / alone", Unit: "ratio", Better: "higher", decimals: 2, modes: dt},
		{Key: "udp_fair_flood_pps", Label: "UDP flood: datagrams offered", Unit: "dgram/s", Better: "higher", decimals: 0, modes: dt},
		{Key: "udp_fair_delivered_pps", Label: "UDP flood: datagrams delivered", Unit: "dgram/s", Better: "higher", decimals: 0, modes: dt},
		{Key: "udp_fair_sender_cores", Label: "UDP flood: the sender's CPU", Unit: "cores", Better: "lower", decimals: 2, modes: dt},
		{Key: "udp_fair_unread_tcp_ratio", Label: "UDP flood to a socket nobody reads: TCP stream beside / alone", Unit: "ratio", Better: "higher", decimals: 2, modes: tun},
		{Key: "udp_fair_unread_sender_cores", Label: "UDP flood to a socket nobody reads: the sender's CPU", Unit: "cores", Better: "lower", decimals: 2, modes: tun},
		{Key: "udp_fair_dropped", Label: "UDP flood: edge udpDatagramsDropped", Unit: "dgrams", Better: "lower", decimals: 0, modes: tun},
		{Key: "udp_fair_cpu_ratio", Label: "UDP flood: hub+edge CPU per GB of TCP, beside / alone", Unit: "ratio", Better: "lower", decimals: 2, modes: tun},
	}...)
}

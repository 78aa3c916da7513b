package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/internal/netstat"
)

// The UDP rows under load that PEERS.md compares with frp: round trips of
// many flows at once, and what arrives of a fixed offered rate above what
// any set-up carries without loss, with the set-up's CPU per GB of it.

// udpFlowRoundTrips: udpFlows flows per set-up, each a client socket of its
// own doing udpSmall-byte echo round trips one after another, all at once,
// in alternating rounds; the round trips per second of all of them. A
// datagram without its reply within 200 ms counts as lost and the flow
// sends the next.
func (b *bench) udpFlowRoundTrips(modes []*mode) error {
	d, rounds := 2*time.Second, 3
	if b.cfg.Quick {
		d, rounds = 300*time.Millisecond, 1
	}
	conns := map[string][]*net.UDPConn{}
	for _, m := range modes {
		for i := 0; i < udpFlows; i++ {
			c, err := udpDial(m.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			conns[m.name] = append(conns[m.name], c)
		}
	}
	total := map[string]int64{}
	lost := map[string]int64{}
	elapsed := map[string]time.Duration{}
	for round := 0; round < rounds && b.ctx.Err() == nil; round++ {
		for _, m := range modes {
			var rts, losses atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			end := start.Add(d)
			for _, c := range conns[m.name] {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out := make([]byte, udpSmall)
					in := make([]byte, 65536)
					out[0] = udpEcho
					for seq := uint64(round) << 32; time.Now().Before(end) && b.ctx.Err() == nil; seq++ {
						binary.BigEndian.PutUint64(out[1:], seq)
						if _, err := c.Write(out); err != nil {
							losses.Add(1)
							continue
						}
						c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
						for {
							k, err := c.Read(in)
							if err != nil {
								losses.Add(1)
								break
							}
							if k == udpSmall && binary.BigEndian.Uint64(in[1:]) == seq {
								rts.Add(1)
								break
							}
						}
					}
				}()
			}
			wg.Wait()
			elapsed[m.name] += time.Since(start)
			total[m.name] += rts.Load()
			lost[m.name] += losses.Load()
		}
	}
	for _, m := range modes {
		if elapsed[m.name] == 0 || total[m.name] == 0 {
			b.res.problem("UDP %d flows, %s: no round trips", udpFlows, m.name)
			continue
		}
		b.res.set("udp_flows_rtps", m.name, float64(total[m.name])/elapsed[m.name].Seconds())
		b.res.detail(m.name, "udpFlowRoundTrips", map[string]any{"flows": udpFlows, "datagramBytes": udpSmall,
			"roundTrips": total[m.name], "lost": lost[m.name], "seconds": elapsed[m.name].Seconds(), "rounds": rounds})
	}
	return b.ctx.Err()
}

// udpOffered: one flow per set-up offered udpOfferedRate 1200-byte
// datagrams a second (in bursts every millisecond), in alternating rounds;
// what the target received per second, and the set-up's own processes'
// CPU per GB the target received (none for direct).
func (b *bench) udpOffered(modes []*mode, utgt *udpTarget) error {
	d, rounds := 2*time.Second, 3
	if b.cfg.Quick {
		d, rounds = 300*time.Millisecond, 1
	}
	type acc struct {
		sent, got      int64
		cpu            float64
		dropped        uint64 // at the edge
		hubDropped     uint64
		perRoundPps    []float64
		socketBufDrops int64
	}
	conns, closeAll, err := udpDialEach(modes)
	if err != nil {
		return err
	}
	defer closeAll()
	accs := map[string]*acc{}
	for _, m := range modes {
		accs[m.name] = &acc{}
	}
	for round := 0; round < rounds && b.ctx.Err() == nil; round++ {
		for _, m := range modes {
			a := accs[m.name]
			var drop0, hdrop0 uint64
			if m.edge != nil {
				_, _, drop0, _ = udpStatus(m)
				hdrop0, _ = hubUDPDropped(m)
			}
			rcv0 := netstat.UDPRcvbufErrors()
			c0, _, _ := m.cpuSeconds()
			sent, got := b.udpOffer(conns[m.name], utgt, udpOfferedRate, d)
			c1, _, _ := m.cpuSeconds()
			a.socketBufDrops += netstat.UDPRcvbufErrors() - rcv0
			if m.edge != nil {
				_, _, drop1, _ := udpStatus(m)
				hdrop1, _ := hubUDPDropped(m)
				a.dropped += drop1 - drop0
				a.hubDropped += hdrop1 - hdrop0
			}
			a.sent += sent
			a.got += got
			a.cpu += c1 - c0
			a.perRoundPps = append(a.perRoundPps, float64(got)/d.Seconds())
		}
	}
	secs := float64(rounds) * d.Seconds()
	for _, m := range modes {
		a := accs[m.name]
		if a.got == 0 {
			b.res.problem("UDP offered %d/s, %s: nothing arrived", udpOfferedRate, m.name)
			continue
		}
		b.res.set("udp_offered_delivered_pps", m.name, float64(a.got)/secs)
		detail := map[string]any{"offeredPps": udpOfferedRate, "sentPps": float64(a.sent) / secs, "sent": a.sent, "received": a.got,
			"roundSeconds": d.Seconds(), "deliveredPpsPerRound": a.perRoundPps, "socketBufferDrops": a.socketBufDrops,
			"ownCpuSeconds": a.cpu}
		if float64(a.sent)/secs < 0.9*udpOfferedRate {
			b.res.note("UDP offered %d/s, %s: the client sent only %.0f/s", udpOfferedRate, m.name, float64(a.sent)/secs)
		}
		if len(m.procs) > 0 {
			b.res.set("udp_cpu_s_per_gb", m.name, a.cpu/(float64(a.got)*udpSize/1e9))
		}
		if m.edge != nil {
			detail["edgeDropped"], detail["hubDropped"] = a.dropped, a.hubDropped
		}
		b.res.detail(m.name, "udpOffered", detail)
	}
	return b.ctx.Err()
}

// udpLoadRowDefs are the rows of udpFlowRoundTrips and udpOffered.
func udpLoadRowDefs() []rowDef {
	procs := []string{modeRelay, modeTunnel}
	return []rowDef{
		{Key: "udp_flows_rtps", Label: fmt.Sprintf("UDP round trips, %d flows, %d B", udpFlows, udpSmall), Unit: "rt/s", Better: "higher", decimals: 0, quic: true},
		{Key: "udp_offered_delivered_pps", Label: fmt.Sprintf("UDP delivered of %dk/s offered, 1200 B", udpOfferedRate/1000), Unit: "dgram/s", Better: "higher", decimals: 0, quic: true},
		{Key: "udp_cpu_s_per_gb", Label: "UDP CPU per GB delivered (own processes)", Unit: "s/GB", Better: "lower", decimals: 1, modes: procs, quic: true},
	}
}

package systest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The bench mode of the system tests (SYSTEST_BENCH=1, make bench-wan):
// issue 13's rows over the two-host impaired link, for the TLS and the QUIC
// transport side by side in one run. Not part of make test (it takes about
// five minutes).
//
// Set-up: the topology of the two-host tests, the WAN link 50 ms each way
// and 1% loss each way (SYSTEST_BENCH_DELAY, SYSTEST_BENCH_LOSS); one hub;
// per set-up two edge processes, one with the default tunnelConnections (2)
// and one with tunnelConnections 1. Set-ups: "tls" (TLS over TCP with the
// kernel's default TCP congestion control, tcp_congestion_control of the
// namespaces: that of the host), "tls-cubic" (the same with cubic, set in
// a route of the WAN link while those edges connect; only when the default
// is not cubic already) and "quic" (quic-go, whose congestion control is its
// own CUBIC, whatever the kernel's). Rows:
//
//   - one stream: the rate one download stream gets (2 s warm-up, then
//     SYSTEST_BENCH_DURATION, default 8 s), beside plain TCP connections
//     from the edge host to the hub host (the kernel's default and cubic);
//   - 8 streams: the aggregate of 8 parallel download streams, the same way;
//   - small request/response p99: one exchange at a time (100-byte request,
//     100-byte reply) on one already open connection, for
//     SYSTEST_BENCH_RR (default 20 s), while one bulk download stream runs
//     through the same tunnel connection (the edges with tunnelConnections
//     1, so that both share it); beside it the same exchanges idle, and
//     with a new connection per exchange under the same bulk stream.
//
// The table goes to the test log; SYSTEST_BENCH_JSON=path writes the rows
// as JSON too.

const (
	benchPlainPort  = 7001 // plain TCP byte source, the kernel's default congestion control
	benchCubicPort  = 7002 // plain TCP byte source, cubic
	benchEdgeBase   = 8100 // edge k: bulk source at base+10k+1, echo at base+10k+2
	benchExchangeSz = 100
)

type benchRow struct {
	Row     string  `json:"row"`
	Setup   string  `json:"setup"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	Samples int     `json:"samples,omitempty"`
	P50     float64 `json:"p50Ms,omitempty"`
	Max     float64 `json:"maxMs,omitempty"`
	Bulk    float64 `json:"bulkMBps,omitempty"` // the bulk stream's rate during a latency row
	Note    string  `json:"note,omitempty"`
}

type benchSetup struct {
	name       string
	transport  string
	cc         string // TCP congestion control of its tunnel connections ("" = the default)
	bulk, echo [2]int // ports: [default connections, 1 connection]
	edges      [2]*Engine
}

func envDuration(t testing.TB, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func envFloat(t testing.TB, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return f
}

// setWANCongestion makes new TCP connections over the WAN link (both ends)
// use congestion control cc, by a route with congctl in each namespace
// ("" restores the plain route). Connections keep what they started with.
// (A namespace other than the host's may not set tcp_congestion_control to
// a congestion control the host has not allowed, so the route it is.)
func setWANCongestion(t testing.TB, tp *topo, cc string) {
	t.Helper()
	for _, side := range [][3]string{{tp.Edge, tp.wanEdge, hubIP}, {tp.Hub, tp.wanHub, edgeWANIP}} {
		args := []string{"-n", side[0], "route", "replace", side[2] + "/32", "dev", side[1]}
		if cc != "" {
			args = append(args, "congctl", cc)
		}
		mustRun(t, tp.ip, args...)
	}
}

// aggregateRate reads from n connections at once and returns their
// aggregate rate (bytes/s) over dur after a warm-up of skip.
func aggregateRate(t testing.TB, dial func() (net.Conn, error), n int, skip, dur time.Duration) float64 {
	t.Helper()
	var total atomic.Int64
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				k, err := c.Read(buf)
				total.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(skip)
	b0, t0 := total.Load(), time.Now()
	time.Sleep(dur)
	b1, t1 := total.Load(), time.Now()
	for _, c := range conns {
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	wg.Wait()
	if b1 == b0 {
		t.Errorf("%d streams moved nothing in %v", n, dur)
	}
	return float64(b1-b0) / t1.Sub(t0).Seconds()
}

// bulkStream starts one download stream; stop ends it and returns its rate
// from start to stop.
func bulkStream(t testing.TB, dial func() (net.Conn, error)) (stop func() float64) {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	var total atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		buf := make([]byte, 256<<10)
		for {
			k, err := c.Read(buf)
			total.Add(int64(k))
			if err != nil {
				return
			}
		}
	}()
	return func() float64 {
		rate := float64(total.Load()) / time.Since(start).Seconds()
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
		<-done
		return rate
	}
}

// exchanges runs 100-byte request / 100-byte reply exchanges one at a time
// for dur, on one open connection (fresh false) or each on a new one, and
// returns the round-trip times.
func exchanges(t testing.TB, dial func() (net.Conn, error), fresh bool, dur time.Duration) []time.Duration {
	t.Helper()
	req, resp := make([]byte, benchExchangeSz), make([]byte, benchExchangeSz)
	for i := range req {
		req[i] = byte('a' + i%26)
	}
	var c net.Conn
	one := func() (time.Duration, error) {
		start := time.Now()
		if c == nil {
			var err error
			if c, err = dial(); err != nil {
				return 0, err
			}
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(req); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return 0, err
		}
		d := time.Since(start)
		if fresh {
			c.Close()
			c = nil
		}
		if string(resp) != string(req) {
			return 0, fmt.Errorf("reply %q is not the request", resp)
		}
		return d, nil
	}
	if !fresh { // the connection is open before the first exchange counts
		if _, err := one(); err != nil {
			t.Fatal(err)
		}
	}
	var rtts []time.Duration
	for end := time.Now().Add(dur); time.Now().Before(end); {
		d, err := one()
		if err != nil {
			t.Fatalf("exchange %d: %v", len(rtts), err)
		}
		rtts = append(rtts, d)
	}
	if c != nil {
		c.Close()
	}
	return rtts
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestWANBench is the bench mode (SYSTEST_BENCH=1); see above.
func TestWANBench(t *testing.T) {
	if os.Getenv("SYSTEST_BENCH") != "1" {
		t.Skip("the impaired-link bench runs with SYSTEST_BENCH=1 (make bench-wan)")
	}
	delay := envDuration(t, "SYSTEST_BENCH_DELAY", 50*time.Millisecond)
	loss := envFloat(t, "SYSTEST_BENCH_LOSS", 0.01)
	dur := envDuration(t, "SYSTEST_BENCH_DURATION", 8*time.Second)
	rrDur := envDuration(t, "SYSTEST_BENCH_RR", 20*time.Second)
	const warm = 2 * time.Second

	tp := newTopo(t)
	defaultCC := tcpDefaultCC(t, tp.Hub)
	serveTCP(t, mustListen(t, tp.Hub, hostPort("0.0.0.0", benchPlainPort)), false, sourceHandler)
	serveTCP(t, mustListen(t, tp.Hub, hostPort("0.0.0.0", benchCubicPort)), false, func(c *tconn) {
		if err := setTCPCongestion(c.TCPConn, "cubic"); err != nil {
			t.Errorf("TCP_CONGESTION cubic: %v", err)
			return
		}
		sourceHandler(c)
	})
	echo := func(c *tconn) {
		buf := make([]byte, benchExchangeSz)
		for {
			if _, err := io.ReadFull(c.br, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}

	setups := []*benchSetup{{name: "tls", transport: "tls"}}
	if defaultCC != "cubic" {
		setups = append(setups, &benchSetup{name: "tls-cubic", transport: "tls", cc: "cubic"})
	}
	setups = append(setups, &benchSetup{name: "quic", transport: "quic"})
	var ids []string
	for k, s := range setups {
		for j := range 2 {
			base := benchEdgeBase + 10*(2*k+j)
			s.bulk[j], s.echo[j] = base+1, base+2
			serveTCP(t, mustListen(t, tp.Hub, hostPort("127.0.0.1", s.bulk[j])), false, sourceHandler)
			serveTCP(t, mustListen(t, tp.Hub, hostPort("127.0.0.1", s.echo[j])), true, echo)
			ids = append(ids, fmt.Sprintf("bench-%s-%d", s.name, j))
		}
	}
	r := newRig(t, tp.Hub, nsTunnelPort, "127.0.0.1", ids...)
	for _, s := range setups {
		if s.cc != "" {
			setWANCongestion(t, tp, s.cc)
		}
		for j, conns := range []int{0, 1} {
			p := map[string]any{"listenPorts": []int{s.bulk[j], s.echo[j]}, "transport": s.transport}
			if conns > 0 {
				p["tunnelConnections"] = conns
			}
			id := fmt.Sprintf("bench-%s-%d", s.name, j)
			s.edges[j] = r.startEdge(t, id, id, tp.Edge, hubIP, p)
			checkTransport(t, s.edges[j], r.Hub, id, s.transport)
		}
		if s.cc != "" {
			setWANCongestion(t, tp, "")
		}
	}
	if ss, err := lookTool("ss"); err == nil {
		out, _ := run(tp.ip, "netns", "exec", tp.Hub, ss, "-Htin", "state", "established", "sport", "=", fmt.Sprintf(":%d", r.TunnelPort))
		var ccs []string
		for _, f := range strings.Fields(out) {
			if f == "bbr" || f == "cubic" || f == "reno" {
				ccs = append(ccs, f)
			}
		}
		t.Logf("the hub's TLS tunnel connections' congestion control (ss -ti): %v", ccs)
	}

	tp.impair(t, delay, loss)
	t.Logf("WAN link: %v each way, %g%% loss each way (%s); the kernel's TCP congestion control: %s",
		delay, loss*100, tp.Mode, defaultCC)
	var rows []benchRow
	add := func(row benchRow) {
		rows = append(rows, row)
		t.Logf("%-28s %-18s %9.3f %s %s", row.Row, row.Setup, row.Value, row.Unit, row.Note)
	}
	plain := []struct {
		name string
		port int
	}{{"plain TCP (" + defaultCC + ")", benchPlainPort}, {"plain TCP (cubic)", benchCubicPort}}
	if defaultCC == "cubic" {
		plain = plain[:1]
	}
	edgeDial := func(port int) func() (net.Conn, error) { return dialFrom(tp.Client, hostPort(edgeFront, port)) }

	for _, n := range []int{1, 8} {
		row := "1 stream"
		if n > 1 {
			row = fmt.Sprintf("%d streams aggregate", n)
		}
		for _, p := range plain {
			add(benchRow{Row: row, Setup: p.name, Value: aggregateRate(t, dialFrom(tp.Edge, hostPort(hubIP, p.port)), n, warm, dur) / 1e6, Unit: "MB/s"})
		}
		for _, s := range setups {
			add(benchRow{Row: row, Setup: s.name, Value: aggregateRate(t, edgeDial(s.bulk[0]), n, warm, dur) / 1e6, Unit: "MB/s",
				Note: "tunnelConnections 2 (default)"})
		}
	}
	for _, s := range setups {
		lat := func(row string, rtts []time.Duration, bulk float64, note string) {
			add(benchRow{Row: row, Setup: s.name, Value: ms(percentile(rtts, 0.99)), Unit: "ms p99", Samples: len(rtts),
				P50: ms(percentile(rtts, 0.5)), Max: ms(slices.Max(rtts)), Bulk: bulk,
				Note: fmt.Sprintf("p50 %.1f ms, max %.1f ms, %d exchanges%s", ms(percentile(rtts, 0.5)), ms(slices.Max(rtts)), len(rtts), note)})
		}
		lat("request/response idle", exchanges(t, edgeDial(s.echo[1]), false, rrDur/3), 0, "")
		stop := bulkStream(t, edgeDial(s.bulk[1]))
		time.Sleep(warm)
		rtts := exchanges(t, edgeDial(s.echo[1]), false, rrDur)
		fresh := exchanges(t, edgeDial(s.echo[1]), true, rrDur)
		bulk := stop() / 1e6
		lat("request/response + bulk", rtts, bulk, fmt.Sprintf(", bulk %.2f MB/s", bulk))
		lat("new conn + bulk", fresh, bulk, "")
	}
	// The table, set-ups side by side.
	var b strings.Builder
	names := []string{}
	for _, p := range plain {
		names = append(names, p.name)
	}
	for _, s := range setups {
		names = append(names, s.name)
	}
	fmt.Fprintf(&b, "impaired link %v each way, %g%% loss each way; MB/s, or ms (p99 of one-at-a-time 100-byte exchanges)\n", delay, loss*100)
	fmt.Fprintf(&b, "%-28s", "row")
	for _, n := range names {
		fmt.Fprintf(&b, " %18s", n)
	}
	b.WriteString("\n")
	var order []string
	for _, row := range rows {
		if !slices.Contains(order, row.Row) {
			order = append(order, row.Row)
		}
	}
	val := func(row, setup string) (benchRow, bool) {
		for _, r := range rows {
			if r.Row == row && r.Setup == setup {
				return r, true
			}
		}
		return benchRow{}, false
	}
	for _, row := range order {
		fmt.Fprintf(&b, "%-28s", row)
		for _, n := range names {
			if r, ok := val(row, n); ok {
				fmt.Fprintf(&b, " %18.3f", r.Value)
			} else {
				fmt.Fprintf(&b, " %18s", "-")
			}
		}
		b.WriteString("\n")
	}
	targets := map[string]any{}
	for _, ref := range []string{"tls", "tls-cubic"} {
		if q, ok := val("8 streams aggregate", "quic"); ok {
			if tl, ok := val("8 streams aggregate", ref); ok && tl.Value > 0 {
				targets["aggregate8QuicOver_"+ref] = q.Value / tl.Value
				fmt.Fprintf(&b, "8 streams aggregate: quic/%s %.2fx (target >= 1.2x)\n", ref, q.Value/tl.Value)
			}
		}
		if q, ok := val("request/response + bulk", "quic"); ok {
			if tl, ok := val("request/response + bulk", ref); ok && tl.Value > 0 {
				targets["requestP99QuicOver_"+ref] = q.Value / tl.Value
				fmt.Fprintf(&b, "small request p99 under bulk: quic/%s %.2fx (target <= 0.5x)\n", ref, q.Value/tl.Value)
			}
		}
	}
	if tp.emu != nil {
		fmt.Fprintf(&b, "link emulator (1000-packet queue per direction; drops count the random loss and a full queue): %v\n", tp.emu)
	}
	t.Logf("results:\n%s", b.String())
	if path := os.Getenv("SYSTEST_BENCH_JSON"); path != "" {
		out, _ := json.MarshalIndent(map[string]any{
			"link":       map[string]any{"delayMsEachWay": delay.Milliseconds(), "lossEachWay": loss, "mode": tp.Mode, "kernelTcpCongestionControl": defaultCC},
			"durationNs": dur, "requestResponseNs": rrDur, "exchangeBytes": benchExchangeSz,
			"rows": rows, "ratios": targets, "at": time.Now().UTC().Format(time.RFC3339),
		}, "", "  ")
		if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		} else {
			t.Logf("wrote %s", path)
		}
	}
}

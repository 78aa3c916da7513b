package systest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel/firewall/nft"
)

// The kernel backend of the edge firewall (CONTRACT section 7) through the
// real binary: the hub assigns the edge its port and blocked addresses, the
// edge (root in a network namespace of the test's own) installs them as
// nftables rules in its table, and blocked clients' SYNs die in the kernel.
// Two namespaces, linked by a veth pair:
//
//	[edge ns] the edge on all interfaces, port fwPort; on lo the clients
//	          10.77.0.1 / fd77::1 (blocked), 10.77.0.2 / fd77::2 (allowed)
//	          and the address they dial, 10.77.0.3 / fd77::3; 10.78.0.1
//	     |  veth
//	[hub ns]  10.78.0.2: the hub; the target on 127.0.0.1:fwPort
//
// The edge's table is read with github.com/google/nftables from inside the
// edge's namespace; the host's firewall is never touched.

const (
	fwPort       = 8080 // the edge's listen port (inside the namespaces)
	fwBlocked4   = "10.77.0.1"
	fwAllowed4   = "10.77.0.2"
	fwEdgeAddr4  = "10.77.0.3"
	fwBlocked6   = "fd77::1"
	fwAllowed6   = "fd77::2"
	fwEdgeAddr6  = "fd77::3"
	fwEdgeLinkIP = "10.78.0.1"
	fwHubLinkIP  = "10.78.0.2"
	// fwDropWait is what a connect from a blocked address is given: its SYN
	// is dropped, so it can only time out.
	fwDropWait = 500 * time.Millisecond
)

// fwBlockedPrefixes are the blockedIps of the hub's entry.
var fwBlockedPrefixes = []string{fwBlocked4 + "/32", fwBlocked6 + "/128"}

// fwNet is the two namespaces, the target and the hub.
type fwNet struct {
	Edge, Hub string // namespace names
	IPv6      bool   // the IPv6 addresses are up in the edge's namespace
	target    *fwLineTarget
	r         *rig
}

// newFwNet builds the namespaces (removed on cleanup), checks that
// nf_tables works in the edge's, and starts the target and a hub (in the
// hub's namespace) that allows edgeID.
func newFwNet(t *testing.T, edgeID string) *fwNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates network namespaces and has the edge install nftables rules inside one " +
			"(run e.g. `sudo -E env PATH=$PATH go test -race -count=1 -v ./systest/`)")
	}
	ip := requireTool(t, "ip", "iproute2")
	id := os.Getpid()
	n := &fwNet{Edge: fmt.Sprintf("%s%df", nsPrefix, id), Hub: fmt.Sprintf("%s%dg", nsPrefix, id)}
	for _, ns := range []string{n.Edge, n.Hub} {
		_, _ = run(ip, "netns", "del", ns) // left over from an earlier test of this run
		mustRun(t, ip, "netns", "add", ns)
		t.Cleanup(func() {
			if _, err := run(ip, "netns", "del", ns); err != nil {
				t.Errorf("removing netns %s: %v", ns, err)
			}
		})
		mustRun(t, ip, "-n", ns, "link", "set", "lo", "up")
	}
	short := strconv.Itoa(id % 1000000)
	ve, vh := "rf"+short+"e", "rf"+short+"h"
	mustRun(t, ip, "link", "add", ve, "netns", n.Edge, "type", "veth", "peer", "name", vh, "netns", n.Hub)
	mustRun(t, ip, "-n", n.Edge, "addr", "add", fwEdgeLinkIP+"/24", "dev", ve)
	mustRun(t, ip, "-n", n.Hub, "addr", "add", fwHubLinkIP+"/24", "dev", vh)
	mustRun(t, ip, "-n", n.Edge, "link", "set", ve, "up")
	mustRun(t, ip, "-n", n.Hub, "link", "set", vh, "up")
	for _, a := range []string{fwBlocked4, fwAllowed4, fwEdgeAddr4} {
		mustRun(t, ip, "-n", n.Edge, "addr", "add", a+"/32", "dev", "lo")
	}
	n.IPv6 = true
	for _, a := range []string{fwBlocked6, fwAllowed6, fwEdgeAddr6} {
		if _, err := run(ip, "-n", n.Edge, "addr", "add", a+"/128", "dev", "lo", "nodad"); err != nil {
			t.Logf("IPv6 does not work in the namespace (%v): the IPv6 clients are left out", err)
			n.IPv6 = false
			break
		}
	}
	requireNftables(t, n.Edge)
	ln := mustListen(t, n.Hub, hostPort("127.0.0.1", fwPort))
	n.target = newFwLineTarget(t, ln)
	n.r = newRig(t, n.Hub, 0, "127.0.0.1", edgeID)
	return n
}

// requireNftables skips the test (fails it when CI=true) when nf_tables
// cannot be used in namespace ns: it makes a table there and removes it.
func requireNftables(t *testing.T, ns string) {
	t.Helper()
	err := withNftConn(ns, func(c *nftables.Conn) error {
		tab := c.AddTable(&nftables.Table{Name: "remoteingress_systest_probe", Family: nftables.TableFamilyINet})
		if err := c.Flush(); err != nil {
			return err
		}
		c.DelTable(tab)
		return c.Flush()
	})
	if err != nil {
		skipOrFail(t, "nf_tables cannot be used in a network namespace (%v): the kernel lacks nf_tables "+
			"(modprobe nf_tables; scripts/ci-system-deps.sh tries)", err)
	}
}

// withNftConn runs fn with an nftables connection into namespace ns.
func withNftConn(ns string, fn func(c *nftables.Conn) error) error {
	f, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return err
	}
	return fn(c)
}

// fwTable is what the kernel holds of the edge's table.
type fwTable struct {
	Exists  bool
	Rules   int
	V4, V6  []fwRange // the ranges of the address sets
	Ports   map[string][]int
	Dropped uint64 // the packets its counters counted
}

func (tb fwTable) String() string {
	if !tb.Exists {
		return "no table"
	}
	return fmt.Sprintf("%d rules, IPv4 %v, IPv6 %v, ports %v, %d packets dropped", tb.Rules, tb.V4, tb.V6, tb.Ports, tb.Dropped)
}

// blocks tells whether the table's address sets hold a.
func (tb fwTable) blocks(a string) bool {
	addr := netip.MustParseAddr(a)
	for _, r := range slices.Concat(tb.V4, tb.V6) {
		if r.first.Compare(addr) <= 0 && addr.Compare(r.last) <= 0 {
			return true
		}
	}
	return false
}

// hasPort tells whether a port set of the table holds p.
func (tb fwTable) hasPort(p int) bool {
	for _, ps := range tb.Ports {
		if slices.Contains(ps, p) {
			return true
		}
	}
	return false
}

type fwRange struct{ first, last netip.Addr }

func (r fwRange) String() string { return r.first.String() + "-" + r.last.String() }

// readFwTable reads the table named name (family inet) in namespace ns:
// its rules, the elements of its sets (by key type) and its counters.
func readFwTable(t testing.TB, ns, name string) fwTable {
	t.Helper()
	var tb fwTable
	err := withNftConn(ns, func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("list tables: %w", err)
		}
		var tab *nftables.Table
		for _, x := range tables {
			if x.Name == name {
				tab = x
			}
		}
		if tab == nil {
			return nil
		}
		tb.Exists, tb.Ports = true, map[string][]int{}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("list chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != name {
				continue
			}
			rules, err := c.GetRules(tab, ch)
			if err != nil {
				return fmt.Errorf("rules of chain %s: %w", ch.Name, err)
			}
			tb.Rules += len(rules)
		}
		sets, err := c.GetSets(tab)
		if err != nil {
			return fmt.Errorf("list sets: %w", err)
		}
		for _, s := range sets {
			es, err := c.GetSetElements(s)
			if err != nil {
				return fmt.Errorf("elements of set %s: %w", s.Name, err)
			}
			switch s.KeyType.Name {
			case nftables.TypeIPAddr.Name:
				rs, err := fwDecodeRanges(es)
				if err != nil {
					return fmt.Errorf("set %s: %w", s.Name, err)
				}
				tb.V4 = append(tb.V4, rs...)
			case nftables.TypeIP6Addr.Name:
				rs, err := fwDecodeRanges(es)
				if err != nil {
					return fmt.Errorf("set %s: %w", s.Name, err)
				}
				tb.V6 = append(tb.V6, rs...)
			case nftables.TypeInetService.Name:
				var ps []int
				for _, e := range es {
					ps = append(ps, int(binary.BigEndian.Uint16(e.Key)))
				}
				slices.Sort(ps)
				tb.Ports[s.Name] = ps
			}
		}
		objs, err := c.GetObjects(tab)
		if err != nil {
			return fmt.Errorf("list objects: %w", err)
		}
		for _, o := range objs {
			if co, ok := o.(*nftables.CounterObj); ok {
				tb.Dropped += co.Packets
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading nftables table %s in netns %s: %v", name, ns, err)
	}
	return tb
}

// fwTables lists the names of the inet tables in namespace ns.
func fwTables(t testing.TB, ns string) []string {
	t.Helper()
	var names []string
	err := withNftConn(ns, func(c *nftables.Conn) error {
		tables, err := c.ListTables()
		for _, x := range tables {
			names = append(names, x.Name)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listing the nftables tables in netns %s: %v", ns, err)
	}
	return names
}

// fwDecodeRanges turns an interval set's elements back into ranges.
func fwDecodeRanges(es []nftables.SetElement) ([]fwRange, error) {
	slices.SortFunc(es, func(a, b nftables.SetElement) int { return bytes.Compare(a.Key, b.Key) })
	var rs []fwRange
	var open *netip.Addr
	for _, e := range es {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, fmt.Errorf("set element key %x is not an address", e.Key)
		}
		if e.IntervalEnd {
			if open != nil { // an end with nothing open marks an empty lower part
				rs = append(rs, fwRange{*open, a.Prev()})
				open = nil
			}
			continue
		}
		if open != nil {
			return nil, fmt.Errorf("two interval starts in a row: %v and %v", *open, a)
		}
		open = &a
	}
	if open != nil { // no end: up to the family's last address
		last := netip.IPv4Unspecified()
		if open.Is6() {
			last = netip.IPv6Unspecified()
		}
		b := last.AsSlice()
		for i := range b {
			b[i] = 0xff
		}
		last, _ = netip.AddrFromSlice(b)
		rs = append(rs, fwRange{*open, last})
	}
	return rs, nil
}

// fwEntry is the hub's allow-list entry for edgeID: port fwPort and, when
// blocked is not nil, the firewall blocking it.
func fwEntry(r *rig, edgeID string, blocked []string) map[string]any {
	e := map[string]any{"id": edgeID, "secret": r.secrets[edgeID], "listenPorts": []int{fwPort}}
	if blocked != nil {
		e["firewall"] = map[string]any{"blockedIps": blocked}
	}
	return e
}

// setFwEntry replaces the hub's allow list with edgeID's entry.
func setFwEntry(t *testing.T, r *rig, edgeID string, blocked []string) {
	t.Helper()
	r.Hub.MustCall(t, "updateAllowedEdges", map[string]any{"edges": []any{fwEntry(r, edgeID, blocked)}}, nil)
}

// startFwEdge starts an edge process in the edge's namespace (no listen
// ports of its own, all interfaces) with the extra params, and waits for the
// tunnel and for the hub's port fwPort to be bound.
func (n *fwNet) startFwEdge(t *testing.T, edgeID string, params map[string]any) *Engine {
	t.Helper()
	e := n.r.startEdge(t, "edge", edgeID, n.Edge, fwHubLinkIP, params)
	if _, _, err := e.WaitEvent("portsAssigned", 0, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the edge to bind the assigned port", func() bool {
		return slices.Equal(fwStatus(t, e).ListenPorts, []int{fwPort})
	})
	return e
}

// fwEdgeStatus is the part of getEdgeStatus these tests read.
type fwEdgeStatus struct {
	Running         bool   `json:"running"`
	Connected       bool   `json:"connected"`
	ListenPorts     []int  `json:"listenPorts"`
	FirewallRefused uint64 `json:"firewallRefused"`
}

func fwStatus(t testing.TB, e *Engine) fwEdgeStatus {
	t.Helper()
	var st fwEdgeStatus
	e.MustCall(t, "getEdgeStatus", nil, &st)
	return st
}

// fwWaitAssigned waits for the edge's next portsAssigned event after mark:
// the edge has applied the hub's update (its firewall first).
func fwWaitAssigned(t *testing.T, e *Engine, mark int) {
	t.Helper()
	if _, _, err := e.WaitEvent("portsAssigned", mark, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
}

// dialAs connects from the local address src to dst inside namespace ns.
func dialAs(ns, src, dst string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		var err error
		c, err = d.Dial("tcp", dst)
		return err
	})
	return c, err
}

// wantDropped checks that a connect from src to dst times out: the SYN was
// dropped (no RST, no accept). An in-process refusal would accept and close.
func wantDropped(t *testing.T, ns, src, dst string) {
	t.Helper()
	start := time.Now()
	c, err := dialAs(ns, src, dst, fwDropWait)
	if err == nil {
		_, cerr := waitClosed(c, 2*time.Second)
		c.Close()
		t.Errorf("a client from blocked %s connected to %s (then: %v); its SYN should have been dropped in the kernel", src, dst, cerr)
		return
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("a connect from blocked %s to %s: %v after %v, want a timeout (SYN dropped, no RST)", src, dst, err, time.Since(start).Round(time.Millisecond))
	}
}

// wantRefusedInProcess checks that a client from src to dst is accepted by
// the kernel and closed by the edge at once: EOF or a reset (which may
// already end the connect, when the edge's close beats the dialer's check of
// the handshake), never a timeout or a refused connect.
func wantRefusedInProcess(t *testing.T, ns, src, dst string) {
	t.Helper()
	start := time.Now()
	c, err := dialAs(ns, src, dst, 2*time.Second)
	if err == nil {
		_, err = waitClosed(c, 2*time.Second)
		c.Close()
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("the blocked client %s to %s: %v; want it accepted and closed at once", src, dst, err)
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		t.Logf("the blocked client %s was accepted and closed after %v (%v)", src, time.Since(start).Round(time.Microsecond), err)
	default:
		t.Errorf("the blocked client %s to %s: %v; want EOF or a reset", src, dst, err)
	}
}

// wantThrough connects from src to dst, sends a line and checks that the
// target got it behind a PROXY header naming the client and that the
// target's answer came back.
func wantThrough(t *testing.T, n *fwNet, src, dst string) {
	t.Helper()
	c, err := dialAs(n.Edge, src, dst, 5*time.Second)
	if err != nil {
		t.Errorf("a client from %s cannot connect to %s: %v", src, dst, err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := fmt.Sprintf("hello from %s %d", src, time.Now().UnixNano())
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		t.Errorf("client %s: write: %v", src, err)
		return
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || reply != "ok "+msg+"\n" {
		t.Errorf("client %s: the target's answer %q, %v; want %q", src, reply, err, "ok "+msg)
		return
	}
	rec, ok := n.target.find(msg)
	if !ok {
		t.Errorf("the target has no record of %q", msg)
		return
	}
	local := c.LocalAddr().(*net.TCPAddr)
	_, dport, _ := net.SplitHostPort(dst)
	dhost, _, _ := net.SplitHostPort(dst)
	if rec.SrcIP != src || rec.SrcPort != local.Port || rec.DstIP != dhost || strconv.Itoa(rec.DstPort) != dport {
		t.Errorf("PROXY header %q for a client %s connected to %s", rec.Line, local, dst)
	}
}

// fwLineTarget answers each line after the PROXY header with "ok <line>" and
// records the header by line.
type fwLineTarget struct {
	srv *tcpServer
	mu  sync.Mutex
	got map[string]proxyInfo
}

func newFwLineTarget(t testing.TB, ln net.Listener) *fwLineTarget {
	lt := &fwLineTarget{got: map[string]proxyInfo{}}
	lt.srv = serveTCP(t, ln, true, func(c *tconn) {
		for {
			line, err := c.br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			lt.mu.Lock()
			lt.got[line] = c.proxy
			lt.mu.Unlock()
			if _, err := fmt.Fprintf(c, "ok %s\n", line); err != nil {
				return
			}
		}
	})
	return lt
}

func (lt *fwLineTarget) find(line string) (proxyInfo, bool) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	p, ok := lt.got[line]
	return p, ok
}

// fromIP tells whether the target saw a client of ip.
func (lt *fwLineTarget) fromIP(ip string) bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	for _, p := range lt.got {
		if p.SrcIP == ip {
			return true
		}
	}
	return false
}

// waitTable polls the edge's table in ns until cond holds (5 s at most).
func waitTable(t *testing.T, ns, name, what string, cond func(fwTable) bool) fwTable {
	t.Helper()
	var tb fwTable
	if !testutil.Poll(5*time.Second, func() bool { tb = readFwTable(t, ns, name); return cond(tb) }) {
		t.Fatalf("nftables table %s: waited 5 s for %s; it holds: %v", name, what, tb)
	}
	return tb
}

// fwInstalled is the table of the hub's blocks: rules, both prefixes, the port.
func fwInstalled(v6 bool) func(fwTable) bool {
	return func(tb fwTable) bool {
		return tb.Exists && tb.Rules > 0 && tb.hasPort(fwPort) && tb.blocks(fwBlocked4) && !tb.blocks(fwAllowed4) &&
			(!v6 || (tb.blocks(fwBlocked6) && !tb.blocks(fwAllowed6)))
	}
}

func fwGone(tb fwTable) bool { return !tb.Exists }

// TestNftablesBlocksInKernel: an edge started without listen ports and with
// the default firewall backend gets port P and blockedIps from the hub and
// installs them in its own nftables table (named by nft.TableName, read back
// from the kernel: the blocked IPv4 and IPv6 prefixes, port P, drop rules).
// A connect from a blocked address times out (its SYN is dropped in the
// kernel: no accept, no RST, nothing reaches the target), an allowed client's
// bytes reach the target behind a PROXY header naming it, and
// firewallRefused counts exactly the packets the table dropped. Lifting the
// block removes the table and lets the address through (the count stays);
// blocking again installs it again, and stopEdge removes it.
func TestNftablesBlocksInKernel(t *testing.T) {
	const id = "edge-nft-kernel"
	n := newFwNet(t, id)
	name := nft.TableName(id)
	setFwEntry(t, n.r, id, fwBlockedPrefixes)
	edge := n.startFwEdge(t, id, nil)

	tb := waitTable(t, n.Edge, name, "the hub's blocks", fwInstalled(n.IPv6))
	t.Logf("table %s: %v", name, tb)
	if tb.Dropped != 0 {
		t.Errorf("the table counted %d drops before any client", tb.Dropped)
	}

	dst4, dst6 := hostPort(fwEdgeAddr4, fwPort), hostPort(fwEdgeAddr6, fwPort)
	wantDropped(t, n.Edge, fwBlocked4, dst4)
	wantThrough(t, n, fwAllowed4, dst4)
	if n.IPv6 {
		wantDropped(t, n.Edge, fwBlocked6, dst6)
		wantThrough(t, n, fwAllowed6, dst6)
	}
	if n.target.fromIP(fwBlocked4) || n.target.fromIP(fwBlocked6) {
		t.Error("a blocked client reached the target")
	}
	tb = readFwTable(t, n.Edge, name)
	st := fwStatus(t, edge)
	t.Logf("after the blocked connects: the table dropped %d packets, firewallRefused %d", tb.Dropped, st.FirewallRefused)
	if tb.Dropped == 0 || st.FirewallRefused == 0 {
		t.Errorf("the table dropped %d packets and firewallRefused is %d; want both > 0", tb.Dropped, st.FirewallRefused)
	}
	if st.FirewallRefused != tb.Dropped {
		t.Errorf("firewallRefused %d, the kernel dropped %d (no client should have been refused in process)", st.FirewallRefused, tb.Dropped)
	}

	// The block lifted: the table goes, the address passes.
	mark := edge.Mark()
	setFwEntry(t, n.r, id, nil)
	fwWaitAssigned(t, edge, mark)
	waitTable(t, n.Edge, name, "the table to go once the block is lifted", fwGone)
	wantThrough(t, n, fwBlocked4, dst4)
	if n.IPv6 {
		wantThrough(t, n, fwBlocked6, dst6)
	}
	if after := fwStatus(t, edge).FirewallRefused; after < st.FirewallRefused {
		t.Errorf("firewallRefused fell from %d to %d when the table was removed", st.FirewallRefused, after)
	}

	// Blocked again, then stopEdge: the table is back, then gone.
	mark = edge.Mark()
	setFwEntry(t, n.r, id, fwBlockedPrefixes)
	fwWaitAssigned(t, edge, mark)
	waitTable(t, n.Edge, name, "the hub's blocks again", fwInstalled(n.IPv6))
	wantDropped(t, n.Edge, fwBlocked4, dst4)
	edge.MustCall(t, "stopEdge", map[string]any{}, nil)
	if tb := readFwTable(t, n.Edge, name); tb.Exists {
		t.Errorf("after stopEdge the table is still there: %v", tb)
	}
	if names := fwTables(t, n.Edge); len(names) != 0 {
		t.Errorf("after stopEdge the edge's namespace still has nftables tables %v", names)
	}
}

// TestNftablesLeftoverAfterKill: kill -9 of the edge while its table holds
// rules leaves the table in the kernel (blocked clients' SYNs still
// dropped, while allowed ones are refused as nothing listens); a
// new edge process of the same id removes it at startEdge, before its
// tunnel is up (its hub is unreachable) and without any firewall of its
// own, and installs its own table once the hub assigns the blocks again.
func TestNftablesLeftoverAfterKill(t *testing.T) {
	const id = "edge-nft-kill"
	n := newFwNet(t, id)
	name := nft.TableName(id)
	setFwEntry(t, n.r, id, fwBlockedPrefixes)
	edge := n.startFwEdge(t, id, nil)
	waitTable(t, n.Edge, name, "the hub's blocks", fwInstalled(n.IPv6))

	edge.Kill()
	tb := readFwTable(t, n.Edge, name)
	if !fwInstalled(n.IPv6)(tb) {
		t.Fatalf("after kill -9 of the edge the table should still hold its rules; it holds: %v", tb)
	}
	t.Logf("after kill -9: table %s still there: %v", name, tb)
	// Nothing listens now: an allowed client is refused (RST), a blocked
	// one still times out, its SYN dropped by the table left behind.
	if c, err := dialAs(n.Edge, fwAllowed4, hostPort(fwEdgeAddr4, fwPort), 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("an allowed client with the edge gone: %v, want connection refused", err)
	}
	wantDropped(t, n.Edge, fwBlocked4, hostPort(fwEdgeAddr4, fwPort))

	// A new process whose hub cannot be reached (nothing listens on port 1).
	again := startEngine(t, "edge-again", n.Edge)
	lm := again.LogMark()
	again.StartEdge(t, map[string]any{"hubHost": fwHubLinkIP, "hubPort": 1, "edgeId": id, "secret": n.r.secrets[id]})
	if tb := readFwTable(t, n.Edge, name); tb.Exists {
		t.Errorf("the new edge process did not remove the leftover table at start: %v", tb)
	}
	if st := fwStatus(t, again); !st.Running || st.Connected {
		t.Errorf("the new edge's status %+v; want it running with no tunnel", st)
	}
	if _, err := again.WaitLog(lm, 5*time.Second, "removed the nftables table"); err != nil {
		t.Error(err)
	}
	again.MustCall(t, "stopEdge", map[string]any{}, nil)

	// Now with the hub: its blocks are installed again.
	hm := n.r.Hub.Mark()
	em := again.Mark()
	again.StartEdge(t, map[string]any{"hubHost": fwHubLinkIP, "hubPort": n.r.TunnelPort, "edgeId": id, "secret": n.r.secrets[id]})
	if _, _, err := n.r.Hub.WaitEvent("edgeConnected", hm, 15*time.Second, func(ev Event) bool { return eventString(ev, "edgeId") == id }); err != nil {
		t.Fatal(err)
	}
	fwWaitAssigned(t, again, em)
	waitTable(t, n.Edge, name, "the new edge's own table", fwInstalled(n.IPv6))
	wantDropped(t, n.Edge, fwBlocked4, hostPort(fwEdgeAddr4, fwPort))
	wantThrough(t, n, fwAllowed4, hostPort(fwEdgeAddr4, fwPort))
}

// TestNftablesProcessBackend: with firewallBackend "process" the edge makes
// no nftables table at all, even with blocks assigned; a client from a
// blocked address is accepted by the kernel and closed by the edge at once
// (EOF or reset, not a timeout), counted in firewallRefused, and never
// reaches the target.
func TestNftablesProcessBackend(t *testing.T) {
	const id = "edge-nft-process"
	n := newFwNet(t, id)
	setFwEntry(t, n.r, id, fwBlockedPrefixes)
	edge := n.startFwEdge(t, id, map[string]any{"firewallBackend": "process"})
	wantThrough(t, n, fwAllowed4, hostPort(fwEdgeAddr4, fwPort))

	srcs := [][2]string{{fwBlocked4, hostPort(fwEdgeAddr4, fwPort)}}
	if n.IPv6 {
		srcs = append(srcs, [2]string{fwBlocked6, hostPort(fwEdgeAddr6, fwPort)})
	}
	for i, s := range srcs {
		wantRefusedInProcess(t, n.Edge, s[0], s[1])
		want := uint64(i + 1)
		if !testutil.Poll(2*time.Second, func() bool { return fwStatus(t, edge).FirewallRefused == want }) {
			t.Errorf("firewallRefused %d after %d blocked clients", fwStatus(t, edge).FirewallRefused, want)
		}
	}
	if n.target.fromIP(fwBlocked4) || n.target.fromIP(fwBlocked6) {
		t.Error("a blocked client reached the target")
	}
	if names := fwTables(t, n.Edge); len(names) != 0 {
		t.Errorf("the process backend made nftables tables %v", names)
	}
	if strings.Contains(edge.Stderr(), "installed in nftables") {
		t.Error("the process backend logged that it installed nftables rules")
	}
}

// TestFirewallNonRootFallsBack: an edge that is not root (run as uid 65534
// when the test is root) cannot use nftables: it says so in one log line
// however many blocks it gets, and still refuses blocked clients in
// process (accepted, closed at once, counted), while others pass. It runs
// on loopback, without a namespace, as any user.
func TestFirewallNonRootFallsBack(t *testing.T) {
	const id = "edge-nft-nonroot"
	port := testutil.FreePort(t, loopbacks...)
	target := newFwLineTarget(t, mustListen(t, "", hostPort("127.0.0.2", port)))
	r := newRig(t, "", 0, "127.0.0.2", id)
	entry := func(blocked ...string) {
		r.Hub.MustCall(t, "updateAllowedEdges", map[string]any{"edges": []any{map[string]any{
			"id": id, "secret": r.secrets[id], "listenPorts": []int{port},
			"firewall": map[string]any{"blockedIps": blocked}}}}, nil)
	}
	entry("127.0.0.3/32")

	bin := binPath
	var attr *syscall.SysProcAttr
	if os.Geteuid() == 0 {
		// A copy the user can run (the build's directory is private).
		dir, err := os.MkdirTemp("", "remoteingress-nonroot-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		bin = filepath.Join(dir, "remoteingress-bin")
		data, err := os.ReadFile(binPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		attr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL,
			Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	}
	cmd := exec.Command(bin, "--management")
	cmd.SysProcAttr = attr
	edge := startEngineCmd(t, "edge-nonroot", cmd)
	// Checked before startEdge, so that an edge that is root after all
	// never gets near the host's firewall.
	if uids := fwProcUIDs(t, edge.Pid()); slices.Contains(uids, 0) {
		t.Fatalf("the edge runs with uids %v; it must not be root", uids)
	} else {
		t.Logf("the edge runs as uid %d", uids[1])
	}
	edge.StartEdge(t, map[string]any{"hubHost": "127.0.0.1", "hubPort": r.TunnelPort, "edgeId": id, "secret": r.secrets[id], "listenHost": "127.0.0.1"})
	fwWaitAssigned(t, edge, 0)
	testutil.Eventually(t, 5*time.Second, "the edge to bind the assigned port", func() bool {
		return slices.Equal(fwStatus(t, edge).ListenPorts, []int{port})
	})
	mark := edge.Mark()
	entry("127.0.0.3/32", "127.0.0.4/32") // a second block: no second log line
	fwWaitAssigned(t, edge, mark)

	for i, src := range []string{"127.0.0.3", "127.0.0.4"} {
		wantRefusedInProcess(t, "", src, hostPort("127.0.0.1", port))
		want := uint64(i + 1)
		if !testutil.Poll(2*time.Second, func() bool { return fwStatus(t, edge).FirewallRefused == want }) {
			t.Errorf("firewallRefused %d after %d blocked clients", fwStatus(t, edge).FirewallRefused, want)
		}
	}
	c, err := dialAs("", "127.0.0.5", hostPort("127.0.0.1", port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "hi\n")
	if reply, err := bufio.NewReader(c).ReadString('\n'); reply != "ok hi\n" {
		t.Errorf("an allowed client got %q, %v", reply, err)
	}
	c.Close()
	if p, ok := target.find("hi"); !ok || p.SrcIP != "127.0.0.5" {
		t.Errorf("the target saw the allowed client as %+v (found %v)", p, ok)
	}

	lines := 0
	for _, l := range strings.Split(edge.Stderr(), "\n") {
		if strings.Contains(l, "nftables cannot be used") {
			lines++
			t.Logf("the edge says: %s", l)
		}
	}
	if lines != 1 {
		t.Errorf("the edge said %d times that nftables cannot be used, want once:\n%s", lines, edge.Stderr())
	}
}

// fwProcUIDs are the real, effective, saved and filesystem uids of a process.
func fwProcUIDs(t testing.TB, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			var uids []int
			for _, f := range strings.Fields(rest) {
				uid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("/proc/%d/status: %q", pid, l)
				}
				uids = append(uids, uid)
			}
			if len(uids) == 4 {
				return uids
			}
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return nil
}

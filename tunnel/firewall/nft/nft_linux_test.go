//go:build linux

package nft

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The tests that touch nftables run in a network namespace of their own: the
// test (the parent) creates it with ip netns, re-executes this test binary
// inside it with childEnv set to a mode ("1" for a plain run), and removes
// the namespace after. The host's firewall is never touched.
const childEnv = "REMOTEINGRESS_NFT_TEST_CHILD"

// The addresses in a test namespace: 127.0.0.0/8 is all on lo; the IPv6
// ones are added to lo by newNetns.
var (
	allowed4 = netip.MustParseAddr("127.0.0.1")
	blocked4 = netip.MustParseAddr("127.0.0.100")
	allowed6 = netip.MustParseAddr("fd77::1")
	blocked6 = netip.MustParseAddr("fd77::bad")
	other6   = netip.MustParseAddr("fd77::c0de")
)

// shortTimeout is how long a connect from a blocked source is given: the
// SYN is dropped, so it can only time out.
const shortTimeout = 300 * time.Millisecond

var nsSeq atomic.Int64

type netns struct{ name string }

// ipPath is iproute2's ip, or "" when it is not installed.
func ipPath() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(ipPath(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns makes a network namespace with lo up and the test addresses on
// it, removed when the test ends. It skips the test when it cannot.
func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: nftables and network namespaces (run the package's tests as root)")
	}
	if ipPath() == "" {
		t.Skip("needs ip (iproute2) for the network namespaces the tests run in")
	}
	removeStaleNetns()
	ns := &netns{name: fmt.Sprintf("ri-nft-%d-%d", os.Getpid(), nsSeq.Add(1))}
	if out, err := exec.Command(ipPath(), "netns", "add", ns.name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (ip netns add): %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ipPath(), "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
	for _, a := range []netip.Addr{allowed6, blocked6, other6} {
		ipCmd(t, "-n", ns.name, "addr", "add", a.String()+"/128", "dev", "lo", "nodad")
	}
	return ns
}

// removeStaleNetns removes the namespaces of earlier test processes that
// died before their cleanup ran.
func removeStaleNetns() {
	names, _ := filepath.Glob("/run/netns/ri-nft-*")
	for _, path := range names {
		name := filepath.Base(path)
		f := strings.Split(name, "-")
		if len(f) != 4 {
			continue
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = exec.Command(ipPath(), "netns", "del", name).Run()
		}
	}
}

// command is this test binary re-executed in the namespace, running only
// the current test, in the mode given.
func (ns *netns) command(t *testing.T, ctx context.Context, mode string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, ipPath(), "netns", "exec", ns.name, os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs the child in the mode to its end: the test fails with its
// output when it failed, skips when it skipped and logs its output when it
// passed.
func (ns *netns) run(t *testing.T, mode string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := ns.command(t, ctx, mode).CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("child (%s) in namespace %s: %v\n%s", mode, ns.name, err, text)
	}
	if i := strings.Index(text, "--- SKIP: "); i >= 0 {
		t.Skipf("child (%s) skipped:\n%s", mode, text[i:])
	}
	if !strings.Contains(text, "--- PASS: "+t.Name()) {
		t.Fatalf("child (%s) did not run the test:\n%s", mode, text)
	}
	t.Logf("child (%s) in namespace %s:\n%s", mode, ns.name, text)
}

// inNetns runs body in a fresh network namespace (in a child process); in
// the child it runs body itself.
func inNetns(t *testing.T, body func(t *testing.T)) {
	t.Helper()
	if os.Getenv(childEnv) != "" {
		body(t)
		return
	}
	newNetns(t).run(t, "1")
}

// openTable opens the table for the edge id in the child, closed at the
// test's end; the test skips when nftables is unavailable.
func openTable(t *testing.T, id string) *Table {
	t.Helper()
	tab, err := Open(TableName(id))
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("nftables unavailable in the namespace: %v", err)
	}
	if err != nil {
		t.Fatalf("Open(%q): %v", TableName(id), err)
	}
	t.Cleanup(func() {
		if err := tab.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tab
}

// kernelState is what the kernel holds of a table, read with the library.
type kernelState struct {
	exists       bool
	chain        *nftables.Chain
	rules        []*nftables.Rule
	set4, set6   []addrRange
	tcp, udp     []int
	counterPkts  uint64
	counterFound bool
}

func readState(t *testing.T, name string) kernelState {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatalf("nftables.New: %v", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var st kernelState
	var tab *nftables.Table
	for _, x := range tables {
		if x.Name == name {
			tab = x
		}
	}
	if tab == nil {
		return st
	}
	st.exists = true
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list chains: %v", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == name && ch.Name == chainName {
			st.chain = ch
		}
	}
	if st.chain != nil {
		if st.rules, err = c.GetRules(tab, st.chain); err != nil {
			t.Fatalf("list rules: %v", err)
		}
	}
	elems := func(set string) []nftables.SetElement {
		s, err := c.GetSetByName(tab, set)
		if err != nil {
			t.Fatalf("set %s: %v", set, err)
		}
		es, err := c.GetSetElements(s)
		if err != nil {
			t.Fatalf("elements of set %s: %v", set, err)
		}
		return es
	}
	st.set4 = decodeRanges(t, elems(set4Name))
	st.set6 = decodeRanges(t, elems(set6Name))
	st.tcp = decodePorts(elems(tcpSetName))
	st.udp = decodePorts(elems(udpSetName))
	objs, err := c.GetObjects(tab)
	if err != nil {
		t.Fatalf("list objects: %v", err)
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok && co.Name == counterName {
			st.counterFound, st.counterPkts = true, co.Packets
		}
	}
	return st
}

// decodeRanges turns an interval set's elements back into ranges.
func decodeRanges(t *testing.T, es []nftables.SetElement) []addrRange {
	t.Helper()
	slices.SortFunc(es, func(a, b nftables.SetElement) int { return bytes.Compare(a.Key, b.Key) })
	var rs []addrRange
	var open *netip.Addr
	for _, e := range es {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			t.Fatalf("set element key %x is not an address", e.Key)
		}
		if e.IntervalEnd {
			if open == nil {
				// The kernel may report an end at the family's first
				// address for an empty lower part; nothing is open.
				continue
			}
			rs = append(rs, addrRange{*open, a.Prev()})
			open = nil
			continue
		}
		if open != nil {
			t.Fatalf("two interval starts in a row: %v and %v", *open, a)
		}
		open = &a
	}
	if open != nil {
		// No end: the interval runs to the family's last address.
		rs = append(rs, addrRange{*open, lastAddr(netip.PrefixFrom(*open, 0).Masked())})
	}
	return rs
}

func decodePorts(es []nftables.SetElement) []int {
	var ps []int
	for _, e := range es {
		ps = append(ps, int(binary.BigEndian.Uint16(e.Key)))
	}
	slices.Sort(ps)
	return ps
}

// tcpServer is a dual-stack listener on every address of the namespace
// that records whom it accepted.
type tcpServer struct {
	ln   net.Listener
	port int
	mu   sync.Mutex
	from []netip.Addr
	done chan struct{}
}

func listenTCP(t *testing.T, port int) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("listen tcp: %v", err)
	}
	s := &tcpServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			s.mu.Lock()
			s.from = append(s.from, ap.Addr().Unmap())
			s.mu.Unlock()
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-s.done
	})
	return s
}

// accepted is how many connections from a the server accepted.
func (s *tcpServer) accepted(a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.from {
		if f == a {
			n++
		}
	}
	return n
}

// dst is where a client of family src dials: the namespace's allowed
// address of that family.
func dst(src netip.Addr, port int) netip.AddrPort {
	if src.Is4() {
		return netip.AddrPortFrom(allowed4, uint16(port))
	}
	return netip.AddrPortFrom(allowed6, uint16(port))
}

// dialFrom connects from src to the server's port and closes again.
func dialFrom(src netip.Addr, port int, timeout time.Duration) error {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: timeout}
	c, err := d.Dial("tcp", dst(src, port).String())
	if err != nil {
		return err
	}
	return c.Close()
}

// wantBlockedTCP checks that a connect from src to port times out and the
// listener never sees it.
func wantBlockedTCP(t *testing.T, s *tcpServer, src netip.Addr) {
	t.Helper()
	before := s.accepted(src)
	err := dialFrom(src, s.port, shortTimeout)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("connect from %v to port %d: got %v, want a timeout (SYN dropped)", src, s.port, err)
	}
	if s.accepted(src) != before {
		t.Errorf("the listener on port %d accepted a connection from blocked %v", s.port, src)
	}
}

// wantAllowedTCP checks that a connect from src to port succeeds and is
// accepted.
func wantAllowedTCP(t *testing.T, s *tcpServer, src netip.Addr) {
	t.Helper()
	before := s.accepted(src)
	if err := dialFrom(src, s.port, 2*time.Second); err != nil {
		t.Errorf("connect from %v to port %d: %v, want it connected", src, s.port, err)
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for s.accepted(src) == before {
		if time.Now().After(deadline) {
			t.Errorf("the listener on port %d did not accept the connection from %v", s.port, src)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// udpServer is a dual-stack UDP socket that counts datagrams per source.
type udpServer struct {
	conn *net.UDPConn
	port int
	mu   sync.Mutex
	got  map[netip.Addr]int
	done chan struct{}
}

func listenUDP(t *testing.T, port int) *udpServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	s := &udpServer{conn: conn, port: conn.LocalAddr().(*net.UDPAddr).Port, got: map[netip.Addr]int{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			_, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got[from.Addr().Unmap()]++
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-s.done
	})
	return s
}

func (s *udpServer) count(a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[a]
}

// sendUDP sends one datagram from src to port.
func sendUDP(t *testing.T, src netip.Addr, port int) {
	t.Helper()
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst(src, port)))
	if err != nil {
		t.Fatalf("udp from %v: %v", src, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("udp from %v to port %d: %v", src, port, err)
	}
}

// wantUDP sends a datagram from blocked, then one from allowed (the same
// family), waits for the allowed one and checks whether the blocked one
// arrived as wanted.
func wantUDP(t *testing.T, s *udpServer, blocked, allowed netip.Addr, wantBlockedIn bool) {
	t.Helper()
	before, beforeAllowed := s.count(blocked), s.count(allowed)
	sendUDP(t, blocked, s.port)
	sendUDP(t, allowed, s.port)
	deadline := time.Now().Add(2 * time.Second)
	for s.count(allowed) == beforeAllowed {
		if time.Now().After(deadline) {
			t.Errorf("udp port %d: the datagram from allowed %v was not received", s.port, allowed)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	if wantBlockedIn {
		deadline = time.Now().Add(2 * time.Second)
		for s.count(blocked) == before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	} else {
		time.Sleep(50 * time.Millisecond)
	}
	if in := s.count(blocked) > before; in != wantBlockedIn {
		t.Errorf("udp port %d: datagram from %v received = %v, want %v", s.port, blocked, in, wantBlockedIn)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func dropped(t *testing.T, tab *Table) uint64 {
	t.Helper()
	n, err := tab.Dropped()
	if err != nil {
		t.Fatalf("Dropped: %v", err)
	}
	return n
}

// ---- tests without the kernel ----

func TestTableName(t *testing.T) {
	cases := []string{"", "edge-1", "edge.1", "edge_1", "EDGE 1", "ünïcode/edge", strings.Repeat("x", 300)}
	seen := map[string]string{}
	for _, id := range cases {
		n := TableName(id)
		if !strings.HasPrefix(n, "remoteingress_") {
			t.Errorf("TableName(%q) = %q, want the prefix remoteingress_", id, n)
		}
		if len(n) > 59 {
			t.Errorf("TableName(%q) = %q, %d characters, want at most 59", id, n, len(n))
		}
		for _, r := range n {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
				t.Errorf("TableName(%q) = %q has %q", id, n, r)
			}
		}
		if TableName(id) != n {
			t.Errorf("TableName(%q) is not deterministic", id)
		}
		if other, dup := seen[n]; dup {
			t.Errorf("TableName(%q) = TableName(%q) = %q", id, other, n)
		}
		seen[n] = id
	}
	if got := TableName("edge-1"); !strings.HasPrefix(got, "remoteingress_edge-1_") {
		t.Errorf("TableName(edge-1) = %q, want the id readable in it", got)
	}
	// Ids differing only past the cut or in a replaced character differ.
	long := strings.Repeat("a", 40)
	if TableName(long+"1") == TableName(long+"2") || TableName("a.b") == TableName("a/b") {
		t.Error("ids with the same sanitized form share a table")
	}
}

func TestMergePrefixes(t *testing.T) {
	r := func(a, b string) addrRange { return addrRange{netip.MustParseAddr(a), netip.MustParseAddr(b)} }
	v4, v6, err := mergePrefixes([]netip.Prefix{
		pfx("10.0.0.0/24"), pfx("10.0.0.128/25"), // nested
		pfx("10.0.1.0/24"),                     // adjacent: merged
		pfx("10.0.3.7/32"), pfx("10.0.3.7/32"), // duplicate
		pfx("10.0.5.9/16"),          // host bits set: masked
		pfx("255.255.255.0/24"),     // reaches the last address
		pfx("::ffff:192.0.2.0/120"), // IPv4-mapped: IPv4
		pfx("2001:db8::/32"), pfx("2001:db8:1::/48"),
		pfx("ffff::/16"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// 10.0.5.9/16 is 10.0.0.0-10.0.255.255, swallowing the other 10.0.x.
	want4 := []addrRange{r("10.0.0.0", "10.0.255.255"), r("192.0.2.0", "192.0.2.255"), r("255.255.255.0", "255.255.255.255")}
	if !slices.Equal(v4, want4) {
		t.Errorf("v4 = %v, want %v", v4, want4)
	}
	want6 := []addrRange{r("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), r("ffff::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}
	if !slices.Equal(v6, want6) {
		t.Errorf("v6 = %v, want %v", v6, want6)
	}
	// The interval set's elements: no end after the last address.
	es := intervalElems(v4)
	if len(es) != 5 || es[len(es)-1].IntervalEnd || !es[1].IntervalEnd || !bytes.Equal(es[1].Key, []byte{10, 1, 0, 0}) {
		t.Errorf("interval elements = %+v", es)
	}
	// Adjacent without nesting, and the whole space.
	v4, _, _ = mergePrefixes([]netip.Prefix{pfx("10.0.0.0/25"), pfx("10.0.0.128/25"), pfx("10.0.2.0/24")})
	if want := []addrRange{r("10.0.0.0", "10.0.0.255"), r("10.0.2.0", "10.0.2.255")}; !slices.Equal(v4, want) {
		t.Errorf("adjacent: %v, want %v", v4, want)
	}
	v4, _, _ = mergePrefixes([]netip.Prefix{pfx("0.0.0.0/0"), pfx("1.2.3.4/32")})
	if want := []addrRange{r("0.0.0.0", "255.255.255.255")}; !slices.Equal(v4, want) || len(intervalElems(v4)) != 1 {
		t.Errorf("0.0.0.0/0: %v (%d elements), want %v and 1 element", v4, len(intervalElems(v4)), want)
	}
	if _, _, err := mergePrefixes([]netip.Prefix{{}}); err == nil {
		t.Error("an invalid prefix was taken")
	}
}

func TestReplaceRejectsBadInput(t *testing.T) {
	// A closed table: should the checks let input through, Replace ends
	// at errClosed and never reaches the kernel.
	tab := newTable("remoteingress_test_input")
	tab.closed = true
	for _, c := range []struct {
		name    string
		blocked []netip.Prefix
		tcp     []int
		udp     []int
	}{
		{"invalid prefix", []netip.Prefix{{}}, []int{80}, nil},
		{"port 0", nil, []int{0}, nil},
		{"port 65536", nil, nil, []int{65536}},
		{"negative port", nil, []int{-1}, nil},
	} {
		err := tab.Replace(c.blocked, c.tcp, c.udp)
		if err == nil || errors.Is(err, errClosed) {
			t.Errorf("%s: Replace = %v, want it refused", c.name, err)
		}
	}
	if err := tab.Replace([]netip.Prefix{pfx("10.0.0.0/8")}, []int{1, 65535}, []int{443, 443}); !errors.Is(err, errClosed) {
		t.Errorf("good input on a closed table: %v, want errClosed", err)
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err   error
		unavl bool
	}{
		{unix.EPERM, true},
		{unix.EACCES, true},
		{unix.EOPNOTSUPP, true},
		{unix.EPROTONOSUPPORT, true},
		{unix.EAFNOSUPPORT, true},
		{unix.ENOENT, true},
		{unix.EINVAL, false},
		{unix.ENOBUFS, false},
		{errors.New("other"), false},
	} {
		wrapped := fmt.Errorf("conn.Receive: %w", &net.OpError{Op: "receive", Err: c.err})
		got := classify(wrapped)
		if errors.Is(got, ErrUnavailable) != c.unavl {
			t.Errorf("classify(%v) = %v, unavailable %v, want %v", c.err, got, !c.unavl, c.unavl)
		}
		if !errors.Is(got, c.err) {
			t.Errorf("classify(%v) = %v lost the cause", c.err, got)
		}
	}
}

// ---- tests in a namespace ----

func TestRulesListed(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		tab := openTable(t, "listed")
		name := TableName("listed")
		st := readState(t, name)
		if !st.exists || st.chain == nil || len(st.rules) != 0 || !st.counterFound {
			t.Fatalf("after Open: table %v, chain %v, %d rules, counter %v; want a table with the chain, no rule and the counter",
				st.exists, st.chain != nil, len(st.rules), st.counterFound)
		}
		ch := st.chain
		if ch.Type != nftables.ChainTypeFilter || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookInput ||
			ch.Priority == nil || *ch.Priority != chainPriority || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
			t.Errorf("chain = %+v, want type filter hook input priority -10 policy accept", ch)
		}
		// Overlapping, adjacent, and reaching either end of the space.
		blocked := []netip.Prefix{pfx("198.51.100.0/24"), pfx("198.51.100.7/32"), pfx("203.0.113.0/25"), pfx("203.0.113.128/25"),
			pfx("0.0.0.0/8"), pfx("255.255.255.0/24"), pfx("2001:db8::/64"), pfx("::/16"), pfx("ffff::/16")}
		if err := tab.Replace(blocked, []int{443, 80, 80}, []int{53}); err != nil {
			t.Fatalf("Replace: %v", err)
		}
		st = readState(t, name)
		want4, want6, _ := mergePrefixes(blocked)
		if !slices.Equal(st.set4, want4) || !slices.Equal(st.set6, want6) {
			t.Errorf("sets: v4 %v v6 %v, want %v and %v", st.set4, st.set6, want4, want6)
		}
		if !slices.Equal(st.tcp, []int{80, 443}) || !slices.Equal(st.udp, []int{53}) {
			t.Errorf("port sets: tcp %v udp %v, want [80 443] and [53]", st.tcp, st.udp)
		}
		// One rule per family and protocol, each looking up its two sets,
		// counting in the named counter and dropping.
		var shapes []string
		for _, r := range st.rules {
			var sets []string
			var counts, drops bool
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Lookup:
					sets = append(sets, e.SetName)
				case *expr.Objref:
					counts = e.Name == counterName && e.Type == int(nftables.ObjTypeCounter)
				case *expr.Verdict:
					drops = e.Kind == expr.VerdictDrop
				}
			}
			if !counts || !drops {
				t.Errorf("rule %v: counts %v drops %v, want both", sets, counts, drops)
			}
			shapes = append(shapes, strings.Join(sets, "+"))
		}
		slices.Sort(shapes)
		want := []string{"tcp_ports+blocked4", "tcp_ports+blocked6", "udp_ports+blocked4", "udp_ports+blocked6"}
		if !slices.Equal(shapes, want) {
			t.Errorf("rules look up %v, want %v", shapes, want)
		}

		// Only IPv4 and only TCP: one rule.
		if err := tab.Replace(blocked[:1], []int{443}, nil); err != nil {
			t.Fatalf("Replace: %v", err)
		}
		if st = readState(t, name); len(st.rules) != 1 || len(st.set6) != 0 || len(st.udp) != 0 {
			t.Errorf("IPv4+TCP only: %d rules, v6 %v, udp %v; want 1 rule and empty sets", len(st.rules), st.set6, st.udp)
		}
		// Nothing blocked or no port: no rule.
		for _, c := range []struct {
			blocked []netip.Prefix
			tcp     []int
		}{{nil, []int{443}}, {blocked, nil}} {
			if err := tab.Replace(c.blocked, c.tcp, nil); err != nil {
				t.Fatalf("Replace: %v", err)
			}
			if st = readState(t, name); len(st.rules) != 0 {
				t.Errorf("Replace(%v, %v, nil): %d rules, want none", c.blocked, c.tcp, len(st.rules))
			}
		}
	})
}

func TestDropsBlockedTraffic(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		tab := openTable(t, "drops")
		listed, unlisted := listenTCP(t, 0), listenTCP(t, 0)
		udpListed, udpUnlisted := listenUDP(t, 0), listenUDP(t, 0)
		udpOnTCPPort := listenUDP(t, listed.port)
		// Before any rule everyone gets in.
		wantAllowedTCP(t, listed, blocked4)
		blocked := []netip.Prefix{netip.PrefixFrom(blocked4, 30).Masked(), pfx("fd77::b00/120")}
		if !blocked[1].Contains(blocked6) || blocked[1].Contains(allowed6) || blocked[1].Contains(other6) {
			t.Fatalf("test prefixes wrong: %v", blocked)
		}
		if err := tab.Replace(blocked, []int{listed.port}, []int{udpListed.port}); err != nil {
			t.Fatalf("Replace: %v", err)
		}
		if n := dropped(t, tab); n != 0 {
			t.Errorf("Dropped before any blocked packet = %d, want 0", n)
		}

		wantBlockedTCP(t, listed, blocked4)
		wantBlockedTCP(t, listed, blocked6)
		wantAllowedTCP(t, listed, allowed4)
		wantAllowedTCP(t, listed, allowed6)
		wantAllowedTCP(t, listed, other6)
		// A port not in the list is not filtered.
		wantAllowedTCP(t, unlisted, blocked4)
		wantAllowedTCP(t, unlisted, blocked6)

		n1 := dropped(t, tab)
		if n1 < 2 {
			t.Errorf("Dropped after two blocked connects = %d, want at least 2 (a SYN each)", n1)
		}

		wantUDP(t, udpListed, blocked4, allowed4, false)
		wantUDP(t, udpListed, blocked6, allowed6, false)
		wantUDP(t, udpUnlisted, blocked4, allowed4, true)
		wantUDP(t, udpUnlisted, blocked6, allowed6, true)
		// The listed TCP port's number is not listed for UDP.
		wantUDP(t, udpOnTCPPort, blocked4, allowed4, true)

		n2 := dropped(t, tab)
		if n2 < n1+2 {
			t.Errorf("Dropped after two blocked datagrams went from %d to %d, want at least +2", n1, n2)
		}
		t.Logf("Dropped: %d after the blocked connects, %d after the blocked datagrams", n1, n2)
	})
}

func TestReplaceSwaps(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		tab := openTable(t, "swaps")
		name := TableName("swaps")
		s := listenTCP(t, 0)
		u := listenUDP(t, 0)
		// always is blocked in both lists: during the swaps it must never
		// get through.
		always := netip.MustParseAddr("127.0.0.77")
		listA := []netip.Prefix{netip.PrefixFrom(blocked4, 32), netip.PrefixFrom(always, 32), netip.PrefixFrom(blocked6, 128)}
		listB := []netip.Prefix{pfx("127.0.0.200/32"), netip.PrefixFrom(always, 32), netip.PrefixFrom(other6, 128)}
		tcp, udp := []int{s.port}, []int{u.port}
		if err := tab.Replace(listA, tcp, udp); err != nil {
			t.Fatalf("Replace A: %v", err)
		}
		wantBlockedTCP(t, s, blocked4)
		wantBlockedTCP(t, s, blocked6)
		wantAllowedTCP(t, s, other6)
		d1 := dropped(t, tab)

		if err := tab.Replace(listB, tcp, udp); err != nil {
			t.Fatalf("Replace B: %v", err)
		}
		st := readState(t, name)
		want4, want6, _ := mergePrefixes(listB)
		if !slices.Equal(st.set4, want4) || !slices.Equal(st.set6, want6) {
			t.Errorf("after Replace B the sets are v4 %v v6 %v, want exactly %v and %v", st.set4, st.set6, want4, want6)
		}
		// The old list is gone: its addresses connect now.
		wantAllowedTCP(t, s, blocked4)
		wantAllowedTCP(t, s, blocked6)
		wantBlockedTCP(t, s, netip.MustParseAddr("127.0.0.200"))
		wantBlockedTCP(t, s, other6)
		d2 := dropped(t, tab)
		if d2 < d1+2 {
			t.Errorf("Dropped across Replace went from %d to %d, want it kept and grown by at least 2", d1, d2)
		}

		// Swap back and forth while datagrams from always keep coming: not
		// one may get in, and every one sent is counted.
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(always, 0)), net.UDPAddrFromAddrPort(dst(always, u.port)))
		if err != nil {
			t.Fatalf("udp from %v: %v", always, err)
		}
		defer c.Close()
		var sent atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Write([]byte("x")); err == nil {
					sent.Add(1)
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
		const swaps = 100
		start := time.Now()
		for i := range swaps {
			l := listA
			if i%2 == 0 {
				l = listB[:2] // no IPv6 part: the rule set changes shape too
			}
			if err := tab.Replace(l, tcp, udp); err != nil {
				t.Errorf("swap %d: %v", i, err)
				break
			}
		}
		took := time.Since(start)
		close(stop)
		wg.Wait()
		wantUDP(t, u, blocked6, allowed6, false) // also a barrier: what was sent has been processed
		if n := u.count(always); n != 0 {
			t.Errorf("%d of %d datagrams from %v (blocked in every list) got in during %d swaps", n, sent.Load(), always, swaps)
		}
		d3 := dropped(t, tab)
		if int64(d3-d2) < sent.Load() {
			t.Errorf("Dropped grew by %d during the swaps, want at least the %d datagrams sent", d3-d2, sent.Load())
		}
		t.Logf("%d swaps in %v (%v each) with %d blocked datagrams dropped meanwhile", swaps, took, took/swaps, sent.Load())

		// An empty list: no rule, everyone connects.
		if err := tab.Replace(nil, tcp, udp); err != nil {
			t.Fatalf("Replace empty: %v", err)
		}
		if st := readState(t, name); len(st.rules) != 0 {
			t.Errorf("after an empty Replace: %d rules, want none", len(st.rules))
		}
		wantAllowedTCP(t, s, always)
		if d4 := dropped(t, tab); d4 < d3 {
			t.Errorf("Dropped went down from %d to %d", d3, d4)
		}
	})
}

// randomPrefixes is n random prefixes, about half IPv4 and half IPv6, a
// tenth of them inside or equal to an earlier one, none containing the
// allowed test addresses.
func randomPrefixes(r *rand.Rand, n int) []netip.Prefix {
	ps := make([]netip.Prefix, 0, n)
	for len(ps) < n {
		var p netip.Prefix
		switch {
		case len(ps) > 0 && r.IntN(10) == 0:
			base := ps[r.IntN(len(ps))]
			bits := base.Bits() + r.IntN(base.Addr().BitLen()-base.Bits()+1)
			b := base.Addr().AsSlice()
			for i := base.Bits(); i < len(b)*8; i++ {
				if r.IntN(2) == 0 {
					b[i/8] ^= 0x80 >> (i % 8)
				}
			}
			a, _ := netip.AddrFromSlice(b)
			p = netip.PrefixFrom(a, bits).Masked()
		case r.IntN(2) == 0:
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], r.Uint32())
			p = netip.PrefixFrom(netip.AddrFrom4(b), 12+r.IntN(21)).Masked()
		default:
			var b [16]byte
			binary.BigEndian.PutUint64(b[:8], r.Uint64())
			binary.BigEndian.PutUint64(b[8:], r.Uint64())
			p = netip.PrefixFrom(netip.AddrFrom16(b), 24+r.IntN(105)).Masked()
		}
		if p.Contains(allowed4) || p.Contains(allowed6) {
			continue
		}
		ps = append(ps, p)
	}
	return ps
}

func TestReplaceLarge(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		tab := openTable(t, "large")
		name := TableName("large")
		s := listenTCP(t, 0)
		r := rand.New(rand.NewPCG(1, 2))
		for round := range 2 {
			list := randomPrefixes(r, 10000)
			target := blocked4
			if round == 1 {
				target = blocked6
			}
			list = append(list, netip.PrefixFrom(target, target.BitLen()))
			start := time.Now()
			if err := tab.Replace(list, []int{s.port, 8443}, []int{s.port}); err != nil {
				t.Fatalf("Replace of %d random prefixes: %v", len(list), err)
			}
			took := time.Since(start)
			want4, want6, _ := mergePrefixes(slices.Clone(list))
			st := readState(t, name)
			if !slices.Equal(st.set4, want4) || !slices.Equal(st.set6, want6) {
				t.Fatalf("round %d: the kernel holds %d IPv4 and %d IPv6 ranges, want exactly the %d and %d merged ones",
					round, len(st.set4), len(st.set6), len(want4), len(want6))
			}
			if len(st.rules) != 4 {
				t.Errorf("round %d: %d rules, want 4", round, len(st.rules))
			}
			wantBlockedTCP(t, s, target)
			wantAllowedTCP(t, s, allowed4)
			wantAllowedTCP(t, s, allowed6)
			t.Logf("round %d: Replace of %d random prefixes (%d IPv4 and %d IPv6 ranges after merging) took %v",
				round, len(list), len(want4), len(want6), took)
		}
	})
}

func TestCloseRemovesTable(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		name := TableName("close")
		// Open, Replace, Dropped and Close leave no socket open.
		fds := openFDs(t)
		for range 20 {
			tab, err := Open(name)
			if errors.Is(err, ErrUnavailable) {
				t.Skipf("nftables unavailable in the namespace: %v", err)
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if err := tab.Replace([]netip.Prefix{pfx("192.0.2.0/24")}, []int{1}, []int{1}); err != nil {
				t.Fatalf("Replace: %v", err)
			}
			if _, err := tab.Dropped(); err != nil {
				t.Fatalf("Dropped: %v", err)
			}
			if err := tab.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		if now := openFDs(t); now != fds {
			t.Errorf("open file descriptors went from %d to %d over 20 Open/Replace/Dropped/Close", fds, now)
		}

		tab, err := Open(name)
		if errors.Is(err, ErrUnavailable) {
			t.Skipf("nftables unavailable in the namespace: %v", err)
		}
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		s := listenTCP(t, 0)
		if err := tab.Replace([]netip.Prefix{netip.PrefixFrom(blocked4, 32)}, []int{s.port}, nil); err != nil {
			t.Fatalf("Replace: %v", err)
		}
		wantBlockedTCP(t, s, blocked4)
		if err := tab.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if st := readState(t, name); st.exists {
			t.Errorf("table %s still there after Close", name)
		}
		wantAllowedTCP(t, s, blocked4)
		if err := tab.Close(); err != nil {
			t.Errorf("second Close: %v, want nil", err)
		}
		if err := tab.Replace(nil, nil, nil); !errors.Is(err, errClosed) {
			t.Errorf("Replace after Close: %v, want errClosed", err)
		}
		if _, err := tab.Dropped(); !errors.Is(err, errClosed) {
			t.Errorf("Dropped after Close: %v, want errClosed", err)
		}
		// A table removed behind the edge's back still closes cleanly.
		tab2, err := Open(name)
		if err != nil {
			t.Fatalf("Open again: %v", err)
		}
		c, _ := nftables.New()
		c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
		if err := c.Flush(); err != nil {
			t.Fatalf("remove the table directly: %v", err)
		}
		if err := tab2.Close(); err != nil {
			t.Errorf("Close of a table removed already: %v, want nil", err)
		}
	})
}

// openFDs is how many file descriptors the process has open.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list open fds: %v", err)
	}
	return len(es)
}

const readyLine = "NFT-TEST-READY"

func TestLeftoverAfterKill(t *testing.T) {
	name := TableName("crash")
	switch os.Getenv(childEnv) {
	case "hold":
		// Open and fill the table, say so, and wait to be killed.
		tab, err := Open(name)
		if errors.Is(err, ErrUnavailable) {
			t.Skipf("nftables unavailable in the namespace: %v", err)
		}
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if err := tab.Replace([]netip.Prefix{netip.PrefixFrom(blocked4, 32)}, []int{4242}, []int{4242}); err != nil {
			t.Fatalf("Replace: %v", err)
		}
		fmt.Println(readyLine)
		time.Sleep(time.Minute)
		t.Fatal("not killed")
	case "check":
		st := readState(t, name)
		if !st.exists || len(st.rules) != 2 || len(st.set4) != 1 {
			t.Fatalf("after the kill: table %v with %d rules and %v; want the leftover with 2 rules and the blocked address", st.exists, len(st.rules), st.set4)
		}
		// The leftover is still in force.
		s := listenTCP(t, 4242)
		wantBlockedTCP(t, s, blocked4)
		tab := openTable(t, "crash")
		st = readState(t, name)
		if !st.exists || len(st.rules) != 0 || len(st.set4) != 0 || len(st.tcp) != 0 || st.counterPkts != 0 {
			t.Errorf("after Open: table %v, %d rules, sets %v %v, counter %d; want it fresh and empty", st.exists, len(st.rules), st.set4, st.tcp, st.counterPkts)
		}
		if n := dropped(t, tab); n != 0 {
			t.Errorf("Dropped after Open = %d, want 0 (the leftover's count is not ours)", n)
		}
		wantAllowedTCP(t, s, blocked4)
		// RemoveLeftover removes a table that is there, and touches nothing
		// when none is (what an edge does at start).
		if removed, err := RemoveLeftover(name); err != nil || !removed {
			t.Errorf("RemoveLeftover with the table there = %v, %v; want true", removed, err)
		}
		if st := readState(t, name); st.exists {
			t.Error("the table is still there after RemoveLeftover")
		}
		if removed, err := RemoveLeftover(name); err != nil || removed {
			t.Errorf("RemoveLeftover without a table = %v, %v; want false", removed, err)
		}
	case "":
		ns := newNetns(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := ns.command(t, ctx, "hold")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start the holding child: %v", err)
		}
		ready := make(chan bool, 1)
		var text strings.Builder
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				text.WriteString(sc.Text() + "\n")
				if sc.Text() == readyLine {
					ready <- true
					_, _ = io.Copy(io.Discard, out)
					return
				}
			}
			ready <- false
		}()
		var ok bool
		select {
		case ok = <-ready:
		case <-time.After(20 * time.Second):
		}
		// ip netns exec execs the test binary: the process is the child.
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("kill the child: %v", err)
		}
		werr := cmd.Wait()
		if !ok {
			if strings.Contains(text.String(), "--- SKIP") {
				t.Skipf("the holding child skipped:\n%s", text.String())
			}
			t.Fatalf("the holding child never got ready (%v):\n%s%s", werr, text.String(), stderr.String())
		}
		var ee *exec.ExitError
		if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("the holding child ended with %v, want killed by SIGKILL", werr)
		}
		ns.run(t, "check")
	}
}

func TestOpenUnavailableWithoutRoot(t *testing.T) {
	name := TableName("nonroot")
	switch os.Getenv(childEnv) {
	case "nonroot":
		if os.Geteuid() == 0 {
			t.Fatal("still root")
		}
		tab, err := Open(name)
		if err == nil {
			_ = tab.Close()
			t.Fatal("Open as a user succeeded")
		}
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, unix.EPERM) {
			t.Fatalf("Open as a user: %v, want ErrUnavailable wrapping EPERM", err)
		}
		t.Logf("Open as uid %d: %v", os.Geteuid(), err)
	case "1":
		// Root in the namespace: run a copy of this binary as nobody.
		dir, err := os.MkdirTemp("", "ri-nft-nonroot-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "nft.test")
		src, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, src, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), childEnv+"=nonroot")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("the child as uid 65534: %v\n%s", err, out)
		}
		t.Logf("the child as uid 65534:\n%s", out)
		if st := readState(t, name); st.exists {
			t.Errorf("the failed Open left table %s", name)
		}
	default:
		if os.Geteuid() != 0 {
			// Not root already: Open fails before it changes anything.
			tab, err := Open(name)
			if err == nil {
				_ = tab.Close()
				t.Fatal("Open without root succeeded")
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Open without root: %v, want ErrUnavailable", err)
			}
			t.Logf("Open as uid %d: %v", os.Geteuid(), err)
			return
		}
		newNetns(t).run(t, "1")
	}
}

// removeTable deletes the table directly, as nft flush ruleset or a
// firewall manager's reload would.
func removeTable(t *testing.T, name string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatalf("remove table %s directly: %v", name, err)
	}
}

func TestRebuildAfterRemoval(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		tab := openTable(t, "rebuild")
		name := TableName("rebuild")
		s := listenTCP(t, 0)
		list := []netip.Prefix{netip.PrefixFrom(blocked4, 32), netip.PrefixFrom(blocked6, 128)}
		if err := tab.Replace(list, []int{s.port}, nil); err != nil {
			t.Fatalf("Replace: %v", err)
		}
		wantBlockedTCP(t, s, blocked4)
		d1 := dropped(t, tab)

		// Removed: Dropped makes it again with the last Replace's content
		// and counts on.
		removeTable(t, name)
		wantAllowedTCP(t, s, blocked4) // really gone
		if d := dropped(t, tab); d != d1 {
			t.Errorf("Dropped right after the rebuild = %d, want the %d counted before", d, d1)
		}
		st := readState(t, name)
		want4, want6, _ := mergePrefixes(list)
		if !st.exists || len(st.rules) != 2 || !slices.Equal(st.set4, want4) || !slices.Equal(st.set6, want6) || !slices.Equal(st.tcp, []int{s.port}) {
			t.Fatalf("after Dropped on a removed table: exists %v, %d rules, sets %v %v %v; want it made again as it was",
				st.exists, len(st.rules), st.set4, st.set6, st.tcp)
		}
		wantBlockedTCP(t, s, blocked6)
		if d := dropped(t, tab); d < d1+1 {
			t.Errorf("Dropped after the rebuild = %d, want more than %d", d, d1)
		}

		// Removed again: Replace makes it again with the new content.
		d2 := dropped(t, tab)
		removeTable(t, name)
		if err := tab.Replace(list[1:], []int{s.port}, nil); err != nil {
			t.Fatalf("Replace on a removed table: %v", err)
		}
		wantAllowedTCP(t, s, blocked4)
		wantBlockedTCP(t, s, blocked6)
		if d := dropped(t, tab); d < d2+1 {
			t.Errorf("Dropped after Replace rebuilt the table = %d, want more than %d", d, d2)
		}
	})
}

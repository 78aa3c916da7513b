package systest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// setns(2) is not in package syscall; its number per architecture.
var sysSetns = map[string]uintptr{
	"amd64": 308, "arm64": 268, "riscv64": 268, "loong64": 268,
	"386": 346, "arm": 375, "ppc64le": 350, "ppc64": 350, "s390x": 339,
}

// inNetns runs fn on an OS thread that has entered the network namespace
// ns (a name under /run/netns; "" runs fn as is). Sockets created by fn
// stay in that namespace and can be used from any goroutine afterwards.
func inNetns(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	trap, ok := sysSetns[runtime.GOARCH]
	if !ok {
		return fmt.Errorf("setns: syscall number unknown on %s", runtime.GOARCH)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if _, _, e := syscall.RawSyscall(trap, target.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, e)
			return
		}
		ferr := fn()
		if _, _, e := syscall.RawSyscall(trap, orig.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			// This thread is stuck in ns: leave it locked, so that it
			// ends with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("setns back from %s: %w", ns, e))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// mustListen listens on addr (TCP) inside netns ns ("" = this namespace).
func mustListen(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in netns %q: %v", addr, ns, err)
	}
	return ln
}

// dialFrom returns a dialer for addr from inside netns ns.
func dialFrom(ns, addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		var c net.Conn
		err := inNetns(ns, func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, 5*time.Second)
			return err
		})
		return c, err
	}
}

// ---------------------------------------------------------------------------
// Two hosts and a client network:
//
//	[client ns] 10.201.0.2, fd00:201::2
//	     |  veth (clean)
//	[edge ns]   10.201.0.1, fd00:201::1  (the edge's public side, all interfaces)
//	            10.200.0.2
//	     |  the "WAN" link: veth with tc netem, or a TUN pair joined by a
//	     |  userspace emulator when the kernel has no netem
//	[hub ns]    10.200.0.1; the targets on 127.0.0.1 there

const (
	hubIP      = "10.200.0.1"
	edgeWANIP  = "10.200.0.2"
	edgeFront  = "10.201.0.1"
	clientIP   = "10.201.0.2"
	edgeFront6 = "fd00:201::1"
	clientIP6  = "fd00:201::2"
)

type topo struct {
	t                 testing.TB
	Hub, Edge, Client string // network namespace names
	ip, tc, iptables  string
	wanHub, wanEdge   string // interface names of the WAN link
	Mode              string // "netem" or "tun"
	emu               *tunLink
	cutRules          bool
}

func newTopo(t testing.TB) *topo {
	t.Helper()
	requireRoot(t)
	tp := &topo{t: t, ip: requireTool(t, "ip", "iproute2")}
	id := os.Getpid()
	tp.Hub = fmt.Sprintf("%s%dh", nsPrefix, id)
	tp.Edge = fmt.Sprintf("%s%de", nsPrefix, id)
	tp.Client = fmt.Sprintf("%s%dc", nsPrefix, id)
	for _, ns := range []string{tp.Hub, tp.Edge, tp.Client} {
		ns := ns
		_, _ = run(tp.ip, "netns", "del", ns) // left over from an earlier test of this run
		mustRun(t, tp.ip, "netns", "add", ns)
		t.Cleanup(func() {
			if _, err := run(tp.ip, "netns", "del", ns); err != nil {
				t.Errorf("removing netns %s: %v", ns, err)
			}
		})
		mustRun(t, tp.ip, "-n", ns, "link", "set", "lo", "up")
	}
	short := strconv.Itoa(id % 1000000)
	// client <-> edge: a plain veth pair, IPv4 and IPv6.
	fe, fc := "ri"+short+"f", "ri"+short+"c"
	mustRun(t, tp.ip, "link", "add", fe, "netns", tp.Edge, "type", "veth", "peer", "name", fc, "netns", tp.Client)
	mustRun(t, tp.ip, "-n", tp.Edge, "addr", "add", edgeFront+"/24", "dev", fe)
	mustRun(t, tp.ip, "-n", tp.Client, "addr", "add", clientIP+"/24", "dev", fc)
	mustRun(t, tp.ip, "-n", tp.Edge, "addr", "add", edgeFront6+"/64", "dev", fe, "nodad")
	mustRun(t, tp.ip, "-n", tp.Client, "addr", "add", clientIP6+"/64", "dev", fc, "nodad")
	mustRun(t, tp.ip, "-n", tp.Edge, "link", "set", fe, "up")
	mustRun(t, tp.ip, "-n", tp.Client, "link", "set", fc, "up")

	// hub <-> edge: the WAN link.
	tp.wanHub, tp.wanEdge = "ri"+short+"h", "ri"+short+"w"
	mode := os.Getenv("SYSTEST_LINK")
	if mode == "" || mode == "netem" {
		tc, err := lookTool("tc")
		if err == nil {
			tp.tc = tc
			mustRun(t, tp.ip, "link", "add", tp.wanHub, "netns", tp.Hub, "type", "veth", "peer", "name", tp.wanEdge, "netns", tp.Edge)
			_, err = run(tp.ip, "netns", "exec", tp.Hub, tc, "qdisc", "add", "dev", tp.wanHub, "root", "netem", "delay", "0ms")
			if err == nil {
				tp.Mode = "netem"
				mustRun(t, tp.ip, "-n", tp.Hub, "addr", "add", hubIP+"/24", "dev", tp.wanHub)
				mustRun(t, tp.ip, "-n", tp.Edge, "addr", "add", edgeWANIP+"/24", "dev", tp.wanEdge)
			} else {
				_, _ = run(tp.ip, "-n", tp.Hub, "link", "del", tp.wanHub)
			}
		}
		if tp.Mode == "" && mode == "netem" {
			t.Fatalf("SYSTEST_LINK=netem but tc netem is not available: %v", err)
		}
		if tp.Mode == "" {
			t.Logf("tc netem is not available in this kernel (%v); the WAN link is a TUN pair joined by the test's userspace link emulator", err)
		}
	}
	if tp.Mode == "" {
		tp.Mode = "tun"
		emu, err := newTunLink(tp.wanHub, tp.wanEdge)
		if err != nil {
			skipOrFail(t, "neither tc netem nor TUN devices are available for the impaired link (%v); "+
				"load sch_netem or tun (scripts/ci-system-deps.sh tries)", err)
		}
		tp.emu = emu
		t.Cleanup(emu.Close) // runs before the namespaces are deleted
		mustRun(t, tp.ip, "link", "set", tp.wanHub, "netns", tp.Hub)
		mustRun(t, tp.ip, "link", "set", tp.wanEdge, "netns", tp.Edge)
		mustRun(t, tp.ip, "-n", tp.Hub, "addr", "add", hubIP, "peer", edgeWANIP, "dev", tp.wanHub)
		mustRun(t, tp.ip, "-n", tp.Edge, "addr", "add", edgeWANIP, "peer", hubIP, "dev", tp.wanEdge)
	}
	mustRun(t, tp.ip, "-n", tp.Hub, "link", "set", tp.wanHub, "up")
	mustRun(t, tp.ip, "-n", tp.Edge, "link", "set", tp.wanEdge, "up")
	if p, err := lookTool("iptables"); err == nil {
		tp.iptables = p
	}
	t.Logf("topology: netns %s (hub %s), %s (edge %s, front %s/%s), %s (clients %s/%s); WAN link: %s",
		tp.Hub, hubIP, tp.Edge, edgeWANIP, edgeFront, edgeFront6, tp.Client, clientIP, clientIP6, tp.Mode)
	return tp
}

// impair sets a one-way delay and a loss rate on both directions of the WAN
// link (so the round trip is twice the delay).
func (tp *topo) impair(t testing.TB, delay time.Duration, loss float64) {
	t.Helper()
	if tp.Mode == "tun" {
		tp.emu.set(delay, loss)
		return
	}
	for _, side := range [][2]string{{tp.Hub, tp.wanHub}, {tp.Edge, tp.wanEdge}} {
		mustRun(t, tp.ip, "netns", "exec", side[0], tp.tc, "qdisc", "replace", "dev", side[1], "root", "netem",
			"delay", fmt.Sprintf("%dms", delay.Milliseconds()), "loss", fmt.Sprintf("%g%%", loss*100))
	}
}

// cut makes the WAN link drop every packet both ways, without telling
// anyone: iptables DROP in both hosts (or the link's own 100% loss when
// iptables is missing).
func (tp *topo) cut(t testing.TB) {
	t.Helper()
	tp.cutRules = tp.iptables != ""
	if !tp.cutRules {
		if tp.Mode == "tun" {
			tp.emu.setDown(true)
			return
		}
		t.Fatal("cutting the link needs iptables (Debian package iptables)")
	}
	mustRun(t, tp.ip, "netns", "exec", tp.Hub, tp.iptables, "-w", "-I", "INPUT", "-s", edgeWANIP, "-j", "DROP")
	mustRun(t, tp.ip, "netns", "exec", tp.Edge, tp.iptables, "-w", "-I", "INPUT", "-s", hubIP, "-j", "DROP")
}

// restore undoes cut.
func (tp *topo) restore(t testing.TB) {
	t.Helper()
	if !tp.cutRules {
		tp.emu.setDown(false)
		return
	}
	mustRun(t, tp.ip, "netns", "exec", tp.Hub, tp.iptables, "-w", "-D", "INPUT", "-s", edgeWANIP, "-j", "DROP")
	mustRun(t, tp.ip, "netns", "exec", tp.Edge, tp.iptables, "-w", "-D", "INPUT", "-s", hubIP, "-j", "DROP")
}

// ---------------------------------------------------------------------------
// The userspace link emulator: two TUN devices (one moved into each
// namespace) whose packets the test process carries across with a delay,
// random loss, a 1000-packet queue per direction (as netem's default limit)
// and an on/off switch.

type tunLink struct {
	files   [2]*os.File
	mu      sync.Mutex
	delay   time.Duration
	loss    float64
	down    bool
	wg      sync.WaitGroup
	fwd     atomic.Int64
	dropped atomic.Int64
	once    sync.Once
}

func openTun(name string) (*os.File, error) {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var ifr [40]byte // struct ifreq
	copy(ifr[:15], name)
	const iffTun, iffNoPI, tunSetIff = 0x0001, 0x1000, 0x400454ca
	*(*uint16)(unsafe.Pointer(&ifr[16])) = iffTun | iffNoPI
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, e)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}

func newTunLink(a, b string) (*tunLink, error) {
	fa, err := openTun(a)
	if err != nil {
		return nil, err
	}
	fb, err := openTun(b)
	if err != nil {
		fa.Close()
		return nil, err
	}
	l := &tunLink{files: [2]*os.File{fa, fb}}
	l.wg.Add(2)
	go l.pump(fa, fb)
	go l.pump(fb, fa)
	return l, nil
}

func (l *tunLink) set(delay time.Duration, loss float64) {
	l.mu.Lock()
	l.delay, l.loss = delay, loss
	l.mu.Unlock()
}

func (l *tunLink) setDown(down bool) {
	l.mu.Lock()
	l.down = down
	l.mu.Unlock()
}

func (l *tunLink) pump(src, dst *os.File) {
	defer l.wg.Done()
	type packet struct {
		due time.Time
		b   []byte
	}
	q := make(chan packet, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range q {
			if d := time.Until(p.due); d > 0 {
				time.Sleep(d)
			}
			_, _ = dst.Write(p.b)
		}
	}()
	buf := make([]byte, 1<<16)
	for {
		n, err := src.Read(buf)
		if err != nil {
			close(q)
			<-done
			return
		}
		l.mu.Lock()
		delay, loss, down := l.delay, l.loss, l.down
		l.mu.Unlock()
		if down || (loss > 0 && rand.Float64() < loss) {
			l.dropped.Add(1)
			continue
		}
		select {
		case q <- packet{due: time.Now().Add(delay), b: append([]byte(nil), buf[:n]...)}:
			l.fwd.Add(1)
		default:
			l.dropped.Add(1) // queue full
		}
	}
}

// Close removes both TUN devices (closing their last fd deletes them).
func (l *tunLink) Close() {
	l.once.Do(func() {
		for _, f := range l.files {
			f.Close()
		}
		l.wg.Wait()
	})
}

func (l *tunLink) String() string {
	return fmt.Sprintf("%d packets carried, %d dropped", l.fwd.Load(), l.dropped.Load())
}

// tcpDefaultCC is the TCP congestion control new connections in netns ns get.
func tcpDefaultCC(t testing.TB, ns string) string {
	t.Helper()
	var b []byte
	err := inNetns(ns, func() error {
		var err error
		b, err = os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
		return err
	})
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// setTCPCongestion sets a connection's TCP congestion control (TCP_CONGESTION).
func setTCPCongestion(c *net.TCPConn, name string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, name)
	}); err != nil {
		return err
	}
	return serr
}

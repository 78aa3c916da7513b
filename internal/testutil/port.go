package testutil

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The kernel takes the local port of every outgoing connection, and of every
// bind to port 0, from the ephemeral range. A port that a test finds by
// binding port 0 and binds again later can meanwhile be taken by any
// connection on the machine: so FreePort picks ports below that range,
// which only a program asking for the number gets. Where the code under test
// can bind port 0 and report the port, let it do that instead.

// portFloor is the lowest port FreePort picks: clear of the well-known
// services that tests may find running on a developer's machine.
const portFloor = 20000

// minPorts is the fewest ports a range must have to pick from it at random.
const minPorts = 1000

// portRangeFile is where Linux keeps the ephemeral range.
const portRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

var (
	portMu sync.Mutex
	// given holds the ports handed out in this process, so that two calls
	// never return the same port before the first one is bound.
	given = map[string]bool{}
)

// FreePort returns a TCP port below the ephemeral range that is free on
// every given host (default 127.0.0.1). It fails the test when it finds
// none, or when a host cannot be bound at all.
func FreePort(t testing.TB, hosts ...string) int {
	t.Helper()
	return freePort(t, "tcp", hosts)
}

// FreeUDPPort is FreePort for UDP.
func FreeUDPPort(t testing.TB, hosts ...string) int {
	t.Helper()
	return freePort(t, "udp", hosts)
}

func freePort(t testing.TB, network string, hosts []string) int {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	lo, hi := pickRange(ephemeralRange())
	portMu.Lock()
	defer portMu.Unlock()
	for attempt := 0; attempt < 200; attempt++ {
		port := 0
		if hi > 0 {
			port = lo + rand.IntN(hi-lo+1)
		}
		port, err := bindAll(network, hosts, port)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			t.Fatalf("finding a free %s port on %v: %v", network, hosts, err)
		}
		key := network + "/" + strconv.Itoa(port)
		if given[key] {
			continue
		}
		given[key] = true
		return port
	}
	t.Fatalf("no %s port free on all of %v", network, hosts)
	return 0
}

// bindAll binds port (0: one the kernel picks on the first host) on every
// host, closes them all again and returns the port.
func bindAll(network string, hosts []string, port int) (int, error) {
	var held []interface{ Close() error }
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for _, h := range hosts {
		addr := net.JoinHostPort(h, strconv.Itoa(port))
		if network == "udp" {
			c, err := net.ListenPacket("udp", addr)
			if err != nil {
				return 0, err
			}
			held = append(held, c)
			port = c.LocalAddr().(*net.UDPAddr).Port
		} else {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return 0, err
			}
			held = append(held, l)
			port = l.Addr().(*net.TCPAddr).Port
		}
	}
	return port, nil
}

// ephemeralRange reads the kernel's ephemeral port range. Where it cannot
// be read (not Linux), it assumes Linux's default, which also lies above
// every port below the IANA range (49152-65535) that BSDs and macOS use.
func ephemeralRange() (low, high int) {
	low, high = 32768, 60999
	b, err := os.ReadFile(portRangeFile)
	if err != nil {
		return low, high
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return low, high
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l < 1 || h < l || h > 65535 {
		return low, high
	}
	return l, h
}

// pickRange returns the ports to pick from, given the ephemeral range:
// [portFloor, low-1] where that is wide enough, else the widest room below
// or above it, else (0, 0): the whole port space is ephemeral, and the
// kernel's pick on the first host is the best there is.
func pickRange(low, high int) (lo, hi int) {
	switch {
	case low-1-portFloor+1 >= minPorts:
		return portFloor, low - 1
	case low-1-1024+1 >= minPorts && low-1024 >= 65535-high:
		return 1024, low - 1
	case 65535-high >= minPorts:
		return high + 1, 65535
	}
	return 0, 0
}

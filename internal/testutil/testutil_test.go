package testutil

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if n := len(b.String()); n != 800 {
		t.Fatalf("%d bytes, want 800", n)
	}
}

func TestFreePortIsBelowTheEphemeralRangeAndBinds(t *testing.T) {
	low, _ := ephemeralRange()
	seen := map[int]bool{}
	for i := 0; i < 20; i++ {
		p := FreePort(t, "127.0.0.1", "127.0.0.2")
		if low > portFloor+minPorts && (p < portFloor || p >= low) {
			t.Fatalf("port %d is not in [%d, %d)", p, portFloor, low)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		for _, h := range []string{"127.0.0.1", "127.0.0.2"} {
			l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
			if err != nil {
				t.Fatalf("port %d on %s: %v", p, h, err)
			}
			l.Close()
		}
	}
}

func TestBindAllReportsATakenPortAsInUse(t *testing.T) {
	// FreePort retries on EADDRINUSE and fails at once on anything else.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	if _, err := bindAll("tcp", []string{"127.0.0.1"}, taken); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bindAll on the taken port %d: %v, want EADDRINUSE", taken, err)
	}
}

func TestFreeUDPPort(t *testing.T) {
	p := FreeUDPPort(t)
	c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestPickRange(t *testing.T) {
	for _, c := range []struct{ low, high, lo, hi int }{
		{32768, 60999, 20000, 32767},
		{49152, 65535, 20000, 49151},
		{10000, 30000, 30001, 65535},
		{15000, 65535, 1024, 14999},
		{1024, 65535, 0, 0},
	} {
		if lo, hi := pickRange(c.low, c.high); lo != c.lo || hi != c.hi {
			t.Errorf("pickRange(%d, %d) = %d, %d; want %d, %d", c.low, c.high, lo, hi, c.lo, c.hi)
		}
	}
}

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if !Poll(time.Second, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("Poll gave up on a condition that holds on the third check")
	}
	start := time.Now()
	checks := 0
	if Poll(30*time.Millisecond, func() bool { checks++; return false }) {
		t.Fatal("Poll reported a condition that never holds")
	}
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Fatalf("Poll gave up after %s, before its timeout", took)
	}
	if checks < 2 {
		t.Fatalf("%d checks in 30 ms", checks)
	}
}

// fatalRecorder records Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestEventuallyNamesWhatItWaitedFor(t *testing.T) {
	f := &fatalRecorder{TB: t}
	Eventually(f, 10*time.Millisecond, "the impossible", func() bool { return false })
	if want := "timed out after 10ms waiting for the impossible"; f.msg != want {
		t.Fatalf("failure %q, want %q", f.msg, want)
	}
	f.msg = ""
	Eventually(f, time.Second, "the obvious", func() bool { return true })
	if f.msg != "" {
		t.Fatalf("failed on a condition that holds: %q", f.msg)
	}
}

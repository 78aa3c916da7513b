package stun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	pion "github.com/pion/stun/v3"

	"github.com/serve-zone/remoteingress/internal/stuntest"
	"github.com/serve-zone/remoteingress/internal/testutil"
)

var stunLoopback = netip.MustParseAddr("127.0.0.1")

func newSTUNTestServer(t *testing.T, b stuntest.Behavior) *stuntest.Server {
	t.Helper()
	srv, err := stuntest.New("127.0.0.1:0", b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("closing STUN test server: %v", err)
		}
	})
	return srv
}

func stunCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// assertSTUNMapped checks that got is the loopback address and exactly the
// source the server saw (so the port is the client's real source port).
func assertSTUNMapped(t *testing.T, got netip.AddrPort, srv *stuntest.Server) {
	t.Helper()
	if got.Addr() != stunLoopback {
		t.Fatalf("mapped IP = %v, want %v", got.Addr(), stunLoopback)
	}
	if got.Port() == 0 {
		t.Fatalf("mapped port is 0 in %v", got)
	}
	if want := srv.LastClient(); got != want {
		t.Fatalf("mapped address = %v, but the server saw the request from %v", got, want)
	}
}

func TestDiscover(t *testing.T) {
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{})
	got, err := Discover(stunCtx(t, 3*time.Second), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	assertSTUNMapped(t, got, srv)
	// One request is normal; a loaded machine may retransmit after 250 ms.
	if n := srv.Answered(); n < 1 {
		t.Fatalf("server answered %d requests, want at least 1", n)
	}
}

func TestDiscoverWithoutDeadline(t *testing.T) {
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{})
	got, err := Discover(context.Background(), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	assertSTUNMapped(t, got, srv)
}

func TestMappedAddressFallback(t *testing.T) {
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{MappedOnly: true})
	got, err := Discover(stunCtx(t, 3*time.Second), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	assertSTUNMapped(t, got, srv)
}

func TestSilentServerTimesOut(t *testing.T) {
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{Silent: true})
	const budget = time.Second
	start := time.Now()
	_, err := Discover(stunCtx(t, budget), srv.Addr())
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("discovery against a silent server succeeded")
	}
	want := "stun: no response from " + srv.Addr() + " within "
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error = %q, want prefix %q", err, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %q does not match context.DeadlineExceeded", err)
	}
	if elapsed < budget-50*time.Millisecond || elapsed > budget+500*time.Millisecond {
		t.Fatalf("gave up after %v, want about %v (the context deadline)", elapsed, budget)
	}
	// Sent at 0, 250 ms and 750 ms.
	if n := srv.Requests(); n < 3 {
		t.Fatalf("server received %d requests within %v, want >= 3 (retransmissions)", n, budget)
	}
}

func TestSilentServerDefaultTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 5 s")
	}
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{Silent: true})
	start := time.Now()
	_, err := Discover(context.Background(), srv.Addr())
	elapsed := time.Since(start)
	want := "stun: no response from " + srv.Addr() + " within 5s"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %q", err, want)
	}
	if elapsed < defaultTimeout-50*time.Millisecond || elapsed > defaultTimeout+time.Second {
		t.Fatalf("gave up after %v, want about %v", elapsed, defaultTimeout)
	}
	// 0, .25, .75, 1.75, 3.75 s: five sends with doubling intervals.
	if n := srv.Requests(); n != 5 {
		t.Fatalf("server received %d requests in 5 s, want 5 (250 ms doubling)", n)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{Silent: true})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Discover(ctx, srv.Addr())
	elapsed := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want one wrapping context.Canceled", err)
	}
	if strings.Contains(err.Error(), "no response") {
		t.Fatalf("cancellation reported as a timeout: %v", err)
	}
	// Well before the 250 ms retransmission point: the blocked read was woken.
	if elapsed > 220*time.Millisecond {
		t.Fatalf("returned %v after start, want promptly after the cancel at 100 ms", elapsed)
	}
}

func TestErrorResponse(t *testing.T) {
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{ErrorCode: 403, ErrorReason: "Forbidden"})
	start := time.Now()
	_, err := Discover(stunCtx(t, 3*time.Second), srv.Addr())
	if err == nil {
		t.Fatal("discovery succeeded against a server answering with an error")
	}
	want := "stun: server " + srv.Addr() + " answered with an error: 403 Forbidden"
	if err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
	if time.Since(start) > time.Second || srv.Requests() != 1 {
		t.Fatalf("error response was not final: %d requests in %v", srv.Requests(), time.Since(start))
	}
}

func TestIgnoresStrayDatagrams(t *testing.T) {
	t.Parallel()
	srv := newSTUNTestServer(t, stuntest.Behavior{Before: stuntest.Decoys})
	got, err := Discover(stunCtx(t, 3*time.Second), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if got == stuntest.DecoyAddr {
		t.Fatal("client accepted a decoy answer")
	}
	assertSTUNMapped(t, got, srv)
	if n := srv.Requests(); n != 1 {
		t.Fatalf("server received %d requests, want 1 (the real answer follows the decoys)", n)
	}
}

// A correct-looking answer from another address than the server's must be
// ignored.
func TestIgnoresAnswersFromOtherSources(t *testing.T) {
	t.Parallel()
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	srv := newSTUNTestServer(t, stuntest.Behavior{
		Before: func(req *pion.Message, from netip.AddrPort) [][]byte {
			forged, err := stuntest.Response(req.TransactionID, stuntest.DecoyAddr, stuntest.Behavior{})
			if err == nil {
				_, _ = other.WriteToUDPAddrPort(forged, from)
			}
			time.Sleep(20 * time.Millisecond) // let the forged one land first
			return nil
		},
	})
	got, err := Discover(stunCtx(t, 3*time.Second), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	assertSTUNMapped(t, got, srv)
}

// Every decoy is rejected by the parser on its own, and the real answer is
// accepted, so TestIgnoresStrayDatagrams cannot pass by luck of ordering.
func TestParseResponseRejectsDecoys(t *testing.T) {
	t.Parallel()
	req, err := pion.Build(pion.TransactionID, pion.BindingRequest, pion.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	res := new(pion.Message)
	for i, d := range stuntest.Decoys(req, client) {
		pkt := append([]byte(nil), d...)
		if addr, done, err := parseResponse(pkt, res, req.TransactionID, "srv"); done {
			t.Errorf("decoy %d (% x...) was taken as the answer: %v, %v", i, pkt[:min(len(pkt), 8)], addr, err)
		}
	}
	good, err := stuntest.Response(req.TransactionID, client, stuntest.Behavior{})
	if err != nil {
		t.Fatal(err)
	}
	addr, done, err := parseResponse(good, res, req.TransactionID, "srv")
	if !done || err != nil || addr != client {
		t.Fatalf("real answer: addr %v done %v err %v, want %v", addr, done, err, client)
	}
	// A success response without any mapped address is final and an error.
	bare, _ := pion.Build(pion.NewTransactionIDSetter(req.TransactionID), pion.BindingSuccess)
	if _, done, err := parseResponse(bare.Raw, res, req.TransactionID, "srv"); !done || err == nil ||
		!strings.Contains(err.Error(), "without a mapped address") {
		t.Fatalf("bare success: done %v err %v", done, err)
	}
}

func TestBadAddress(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{
		"",
		"127.0.0.1",
		"127.0.0.1:",
		"127.0.0.1:0",
		"127.0.0.1:65536",
		"127.0.0.1:stun",
		":3478",
		"[::1",
		"[127.0.0.1]:3478:1",
	} {
		_, err := Discover(stunCtx(t, time.Second), addr)
		if err == nil || !strings.HasPrefix(err.Error(), "stun: bad server address") {
			t.Errorf("Discover(%q) error = %v, want a bad server address error", addr, err)
		}
	}
	// Syntactically fine but unresolvable (RFC 6761 .invalid never resolves).
	_, err := Discover(stunCtx(t, 3*time.Second), "stun.invalid:3478")
	if err == nil || !strings.Contains(err.Error(), "stun.invalid:3478") {
		t.Fatalf("unresolvable host: error = %v, want one naming the server", err)
	}
}

func TestRetransmission(t *testing.T) {
	t.Parallel()
	for drop, minElapsed := range map[int]time.Duration{
		1: 250 * time.Millisecond,  // answered at the 2nd send, 250 ms
		2: 750 * time.Millisecond,  // 3rd send, 250+500 ms
		3: 1750 * time.Millisecond, // 4th send, 250+500+1000 ms
	} {
		t.Run(strconv.Itoa(drop), func(t *testing.T) {
			t.Parallel()
			srv := newSTUNTestServer(t, stuntest.Behavior{DropFirst: drop})
			start := time.Now()
			got, err := Discover(stunCtx(t, 4*time.Second), srv.Addr())
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			assertSTUNMapped(t, got, srv)
			if n := srv.Requests(); n != int64(drop+1) {
				t.Fatalf("server received %d requests, want %d", n, drop+1)
			}
			if elapsed < minElapsed-30*time.Millisecond || elapsed > minElapsed+600*time.Millisecond {
				t.Fatalf("succeeded after %v, want about %v (doubling from 250 ms)", elapsed, minElapsed)
			}
		})
	}
}

// Not parallel: counts goroutines.
func TestNoGoroutineLeft(t *testing.T) {
	srv := newSTUNTestServer(t, stuntest.Behavior{})
	silent := newSTUNTestServer(t, stuntest.Behavior{Silent: true})
	before := runtime.NumGoroutine()
	for range 5 {
		if _, err := Discover(stunCtx(t, time.Second), srv.Addr()); err != nil {
			t.Fatal(err)
		}
		if _, err := Discover(stunCtx(t, 50*time.Millisecond), silent.Addr()); err == nil {
			t.Fatal("silent server answered")
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		if _, err := Discover(ctx, silent.Addr()); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancel: %v", err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCoturn runs the discovery against Debian's coturn (the turnserver
// binary of the "coturn" package) on loopback.
func TestCoturn(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("turnserver (coturn) is not on PATH but CI=true: the CI job must `apt-get install -y coturn`: %v", err)
		}
		t.Skip("turnserver (coturn) is not on PATH; `apt-get install coturn` to run this test")
	}

	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ { // a free port may be taken in between
		addr, err := startSTUNCoturn(t, bin)
		if err != nil {
			lastErr = err
			t.Logf("attempt %d: %v", attempt, err)
			continue
		}
		got, err := Discover(stunCtx(t, 3*time.Second), addr)
		if err != nil {
			t.Fatalf("discovery through coturn at %s: %v", addr, err)
		}
		if got.Addr() != stunLoopback || got.Port() == 0 {
			t.Fatalf("coturn mapped us to %v, want 127.0.0.1:<non-zero>", got)
		}
		return
	}
	t.Fatalf("could not start coturn: %v", lastErr)
}

// startSTUNCoturn starts turnserver in STUN-only mode on a free loopback UDP
// port and waits until it answers a Binding request. The process is killed
// and reaped on test cleanup.
func startSTUNCoturn(t *testing.T, bin string) (string, error) {
	t.Helper()
	port, err := freeUDPPort()
	if err != nil {
		return "", err
	}
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin,
		"-n", // no configuration file (ignores /etc/turnserver.conf)
		"--listening-ip=127.0.0.1",
		"--listening-port="+strconv.Itoa(port),
		"--stun-only",
		"--no-tcp", "--no-tls", "--no-dtls", "--no-cli",
		"--log-file=stdout", "--simple-log",
		"--pidfile="+filepath.Join(dir, "turnserver.pid"),
		"--userdb="+filepath.Join(dir, "turndb"),
	)
	cmd.Dir = dir
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(stop)

	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return "", fmt.Errorf("turnserver exited early (%v); output:\n%s", cmd.ProcessState, out)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := Discover(ctx, addr)
		cancel()
		if err == nil {
			return addr, nil
		}
	}
	stop()
	return "", fmt.Errorf("turnserver did not answer on %s within 15s; output:\n%s", addr, out)
}

func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

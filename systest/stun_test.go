package systest

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
	"github.com/serve-zone/remoteingress/tunnel/stun"
)

// startCoturn runs coturn's turnserver in STUN-only mode on 127.0.0.1:port
// (UDP) and waits until it answers a Binding request.
func startCoturn(t testing.TB, port int) *daemon {
	t.Helper()
	bin := requireTool(t, "turnserver", "coturn")
	dir := t.TempDir()
	cmd := exec.Command(bin, "-n",
		"--listening-ip=127.0.0.1", "--listening-port="+strconv.Itoa(port),
		"--stun-only", "--no-tcp", "--no-tls", "--no-dtls", "--no-cli",
		"--log-file=stdout", "--simple-log",
		"--pidfile="+filepath.Join(dir, "turnserver.pid"),
		"--userdb="+filepath.Join(dir, "turndb"))
	cmd.Dir = dir
	d := startDaemon(t, "coturn", cmd)
	addr := hostPort("127.0.0.1", port)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			t.Fatalf("turnserver exited early (%v):\n%s", d.cmd.ProcessState, d.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := stun.Discover(ctx, addr)
		cancel()
		if err == nil {
			return d
		}
	}
	t.Fatalf("turnserver does not answer on %s after 15 s:\n%s", addr, d.out.String())
	return nil
}

// TestSTUNCoturn: the edge finds its public address with a real coturn,
// keeps working and says so when coturn dies, and recovers when it comes
// back on the same port.
func TestSTUNCoturn(t *testing.T) {
	requireTool(t, "turnserver", "coturn")
	stunPort := testutil.FreeUDPPort(t)
	coturn := startCoturn(t, stunPort)
	stunAddr := hostPort("127.0.0.1", stunPort)

	port := testutil.FreePort(t, loopbacks...)
	target := newOpTarget(t, mustListen(t, "", hostPort("127.0.0.2", port)))
	r := newRig(t, "", 0, "127.0.0.2", "edge-stun")
	edge := r.startEdge(t, "edge", "edge-stun", "", "127.0.0.1", map[string]any{
		"listenHost": "127.0.0.1", "listenPorts": []int{port},
		"stunServer": stunAddr, "stunIntervalSecs": 1,
	})
	ev := edge.MustWaitEvent(t, "publicIpDiscovered", 0, 15*time.Second)
	if ip := eventString(ev, "ip"); ip != "127.0.0.1" {
		t.Fatalf("publicIpDiscovered %s, want 127.0.0.1", ev.Data)
	}
	if st := edge.EdgeStatus(t); st.PublicIP == nil || *st.PublicIP != "127.0.0.1" {
		t.Fatalf("edge status publicIp %v, want 127.0.0.1", st.PublicIP)
	}
	dial := loopbackDial(hostPort("127.0.0.1", port))
	mustOp(t, dial, target, opSpec{Kind: opX, Up: 64 << 10, Down: 64 << 10})

	// coturn dies: the edge warns, and the tunnel is unaffected.
	lm, em := edge.LogMark(), edge.Mark()
	killed := time.Now()
	coturn.Kill()
	warn, err := edge.WaitLog(lm, 20*time.Second, "level=WARN", "STUN")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("coturn killed; %v later the edge logs: %s", warn.At.Sub(killed).Round(time.Millisecond), warn.Text)
	mustOp(t, dial, target, opSpec{Kind: opX, Up: 64 << 10, Down: 64 << 10})
	if st := edge.EdgeStatus(t); !st.Connected || st.PublicIP == nil || *st.PublicIP != "127.0.0.1" {
		t.Fatalf("edge status while STUN is down: connected %v publicIp %v; want connected, 127.0.0.1 kept", st.Connected, st.PublicIP)
	}

	// coturn is back on the same port: discovery resumes.
	lm = edge.LogMark()
	restarted := time.Now()
	startCoturn(t, stunPort)
	ok, err := edge.WaitLog(lm, 30*time.Second, "STUN discovery works again")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("coturn restarted; %v later the edge logs: %s", ok.At.Sub(restarted).Round(time.Millisecond), ok.Text)
	for _, ev := range edge.Events(em) {
		if ev.Name == "publicIpDiscovered" {
			t.Errorf("publicIpDiscovered %s although the address did not change", ev.Data)
		}
	}
	mustOp(t, dial, target, opSpec{Kind: opX, Up: 64 << 10, Down: 64 << 10})
}

// mustOp runs one operation that must be acknowledged end to end.
func mustOp(t testing.TB, dial func() (net.Conn, error), target *opTarget, spec opSpec) opResult {
	t.Helper()
	res := runOp(dial, target, spec, 30*time.Second)
	if !res.Acked {
		t.Fatalf("%c op %d (up %d, down %d) through the tunnel failed: %v", spec.Kind, res.ID, spec.Up, spec.Down, res.Err)
	}
	return res
}

package systest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// rig is a hub process with its allow list; edges are added with startEdge.
type rig struct {
	Hub        *Engine
	TunnelPort int
	HubNetns   string
	hubParams  map[string]any
	secrets    map[string]string
	edgeList   [][2]string
}

func randomSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newRig starts a hub process (in netns when not empty) that forwards to
// targetHost and allows the given edge ids.
func newRig(t testing.TB, netns string, tunnelPort int, targetHost string, edgeIDs ...string) *rig {
	t.Helper()
	return newRigWith(t, netns, map[string]any{"tunnelPort": tunnelPort, "targetHost": targetHost}, edgeIDs...)
}

// newRigWith is newRig with the hub's startHub params given whole.
func newRigWith(t testing.TB, netns string, hubParams map[string]any, edgeIDs ...string) *rig {
	t.Helper()
	r := &rig{HubNetns: netns, secrets: map[string]string{}, hubParams: hubParams}
	for _, id := range edgeIDs {
		r.secrets[id] = randomSecret()
		r.edgeList = append(r.edgeList, [2]string{id, r.secrets[id]})
	}
	r.Hub = startEngine(t, "hub", netns)
	r.TunnelPort = r.Hub.StartHub(t, r.hubParams, r.edgeList...)
	r.hubParams["tunnelPort"] = r.TunnelPort // restarts use the same port
	return r
}

// restartHubProcess starts a new hub process on the same tunnel port (the
// old one must be gone), retrying while the port is still taken.
func (r *rig) restartHubProcess(t testing.TB) {
	t.Helper()
	r.Hub = startEngine(t, "hub", r.HubNetns)
	r.Hub.MustCall(t, "updateAllowedEdges", map[string]any{"edges": edgeObjects(r.edgeList)}, nil)
	r.startHubAgain(t)
}

// startHubAgain calls startHub on the current hub process with the same
// params, retrying for up to 10 s while the port is in use.
func (r *rig) startHubAgain(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.Hub.Call("startHub", r.hubParams)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarting the hub on port %d: %v", r.TunnelPort, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func edgeObjects(list [][2]string) []map[string]string {
	out := make([]map[string]string, 0, len(list))
	for _, e := range list {
		out = append(out, map[string]string{"id": e[0], "secret": e[1]})
	}
	return out
}

// startEdge starts an edge process (in netns when not empty) for edgeID,
// connecting to hubHost, with the extra params (listenPorts, listenHost,
// ...), and waits until both sides report the tunnel.
func (r *rig) startEdge(t testing.TB, name, edgeID, netns, hubHost string, params map[string]any) *Engine {
	t.Helper()
	e := startEngine(t, name, netns)
	hm := r.Hub.Mark()
	p := map[string]any{"hubHost": hubHost, "hubPort": r.TunnelPort, "edgeId": edgeID, "secret": r.secrets[edgeID]}
	for k, v := range params {
		p[k] = v
	}
	e.StartEdge(t, p)
	e.MustWaitEvent(t, "tunnelConnected", 0, 15*time.Second)
	if _, _, err := r.Hub.WaitEvent("edgeConnected", hm, 15*time.Second, func(ev Event) bool {
		return eventString(ev, "edgeId") == edgeID
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// loopbackDial dials addr from the root namespace.
func loopbackDial(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// ---------------------------------------------------------------------------
// Daemons: nginx, HAProxy, coturn as child processes in their own process
// group, stopped (SIGTERM, then SIGKILL to the group) and reaped on cleanup.

type daemon struct {
	name   string
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	exited chan struct{}
	once   sync.Once
}

func startDaemon(t testing.TB, name string, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{name: name, cmd: cmd, out: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	// Its own process group (stopped as a whole), and killed should the
	// test process die without its cleanups (a go test timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(d.out.String(), 40))
		}
	})
	return d
}

// Kill sends SIGKILL to the daemon's process group and waits for its leader.
func (d *daemon) Kill() {
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.exited
}

// Stop asks the process group to terminate, kills it after 5 s, and reaps the leader.
func (d *daemon) Stop() {
	d.once.Do(func() {
		pgid := d.cmd.Process.Pid
		select {
		case <-d.exited:
		default:
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(5 * time.Second):
			}
		}
		// Whatever is left of the group (workers) goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.exited
	})
}

// waitTCP waits until addr accepts connections (or the daemon exits).
func (d *daemon) waitTCP(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			t.Fatalf("%s exited early: %v\n%s", d.name, d.cmd.ProcessState, d.out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s does not accept on %s after 15 s:\n%s", d.name, addr, d.out.String())
}

func (d *daemon) String() string { return fmt.Sprintf("%s(pid %d)", d.name, d.cmd.Process.Pid) }

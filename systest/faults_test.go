package systest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// TestKillHubMidTransfer: kill -9 of the hub while a bulk download and an
// idle stream are in flight. The edge reports tunnelDisconnected, resets its
// clients (never a clean EOF on a truncated download), keeps its listeners,
// and reconnects to a new hub process on the same port; new connections flow
// within a few seconds.
func TestKillHubMidTransfer(t *testing.T) {
	port := testutil.FreePort(t, loopbacks...)
	target := newOpTarget(t, mustListen(t, "", hostPort("127.0.0.2", port)))
	r := newRig(t, "", testutil.FreePort(t, "::"), "127.0.0.2", "edge-kh")
	edge := r.startEdge(t, "edge", "edge-kh", "", "127.0.0.1", map[string]any{"listenHost": "127.0.0.1", "listenPorts": []int{port}})
	dial := loopbackDial(hostPort("127.0.0.1", port))
	mustOp(t, dial, target, opSpec{Kind: opX, Up: 1 << 20, Down: 1 << 20})

	bulk := make(chan opResult, 1)
	go func() { bulk <- runOp(dial, target, opSpec{Kind: opX, Up: 0, Down: 8 << 30}, 60*time.Second) }()
	held, _ := holdConn(t, dial, target)
	if !testutil.Poll(10*time.Second, func() bool {
		for _, rec := range target.all() {
			if rec.Down == 8<<30 {
				return true
			}
		}
		return false
	}) {
		t.Fatal("the bulk download never reached the target")
	}
	time.Sleep(500 * time.Millisecond) // mid-transfer

	em := edge.Mark()
	killAt := time.Now()
	r.Hub.Kill()
	heldClosed := make(chan error, 1)
	go func() {
		at, err := waitClosed(held, 10*time.Second)
		heldClosed <- fmt.Errorf("%v after the kill: %w", at.Sub(killAt).Round(time.Millisecond), err)
	}()
	ev, _, err := edge.WaitEvent("tunnelDisconnected", em, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hub killed (kill -9); the edge reports tunnelDisconnected %v later: %s", ev.At.Sub(killAt).Round(time.Millisecond), ev.Data)
	res := <-bulk
	t.Logf("the bulk download ended %v after the kill, after %s verified: %v", res.End.Sub(killAt).Round(time.Millisecond), mib(res.DownOK), res.Err)
	switch {
	case res.Acked:
		t.Fatal("the 8 GiB download finished although the hub was killed")
	case res.Corrupt:
		t.Errorf("the download was corrupted: %v", res.Err)
	case res.Truncated:
		t.Errorf("the edge ended the client's truncated download with a clean EOF (%v); it must reset it", res.Err)
	case res.End.Sub(killAt) > 5*time.Second:
		t.Errorf("the client of the bulk download waited %v", res.End.Sub(killAt))
	}
	select {
	case err := <-heldClosed:
		t.Logf("the idle stream's client was closed %v", err)
	case <-time.After(10 * time.Second):
		t.Error("the idle stream's client is still open 10 s after the kill")
	}

	st := edge.EdgeStatus(t)
	if !st.Running || st.Connected || len(st.ListenPorts) != 1 || st.ListenPorts[0] != port {
		t.Errorf("edge status while the hub is down: %+v", st)
	}
	// The listener is still there: it accepts, then closes at once (no tunnel).
	c, err := net.DialTimeout("tcp", hostPort("127.0.0.1", port), 2*time.Second)
	if err != nil {
		t.Fatalf("the edge's listener is gone while the hub is down: %v", err)
	}
	_, cerr := waitClosed(c, 2*time.Second)
	c.Close()
	t.Logf("a client while the hub is down: accepted, then closed (%v)", cerr)

	time.Sleep(2 * time.Second) // the hub stays down for a while
	em2 := edge.Mark()
	restartAt := time.Now()
	r.restartHubProcess(t)
	started := time.Now()
	cev, _, err := edge.WaitEvent("tunnelConnected", em2, 30*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	firstOK := waitOp(t, dial, target, 30*time.Second)
	t.Logf("hub restarted on port %d (process ready and listening after %v); tunnel up %v after the restart, first request through %v after it (%v after the kill)",
		r.TunnelPort, started.Sub(restartAt).Round(time.Millisecond), cev.At.Sub(restartAt).Round(time.Millisecond),
		firstOK.Sub(restartAt).Round(time.Millisecond), firstOK.Sub(killAt).Round(time.Millisecond))
	if d := firstOK.Sub(started); d > 10*time.Second {
		t.Errorf("new connections flowed only %v after the hub was back", d)
	}
	mustOp(t, dial, target, opSpec{Kind: opX, Up: 4 << 20, Down: 4 << 20})
}

// TestKillEdge: kill -9 of the edge with 20 streams open. The hub reports
// edgeDisconnected and closes all 20 target connections; its fds return to
// what they were before the edge came.
func TestKillEdge(t *testing.T) {
	port := testutil.FreePort(t, loopbacks...)
	target := newOpTarget(t, mustListen(t, "", hostPort("127.0.0.2", port)))
	r := newRig(t, "", 0, "127.0.0.2", "edge-ke")
	hubBase := r.Hub.settledFDs(t)
	edge := r.startEdge(t, "edge", "edge-ke", "", "127.0.0.1", map[string]any{"listenHost": "127.0.0.1", "listenPorts": []int{port}})
	dial := loopbackDial(hostPort("127.0.0.1", port))
	const n = 20
	ids := make([]uint64, n)
	for i := range ids {
		_, ids[i] = holdConn(t, dial, target)
	}
	if st := r.Hub.HubStatus(t); st.ActiveStreams() != n {
		t.Fatalf("hub reports %d active streams, want %d", st.ActiveStreams(), n)
	}

	hm := r.Hub.Mark()
	killAt := time.Now()
	edge.Kill()
	ev, _, err := r.Hub.WaitEvent("edgeDisconnected", hm, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("edge killed (kill -9); the hub reports edgeDisconnected %v later: %s", ev.At.Sub(killAt).Round(time.Millisecond), ev.Data)
	var eofs, resets int
	var latest time.Duration
	for _, id := range ids {
		rec, err := target.wait(id, 5*time.Second)
		if err != nil {
			t.Errorf("target connection of op %d: %v", id, err)
			continue
		}
		latest = max(latest, rec.End.Sub(killAt))
		if rec.CleanEOF {
			eofs++
		} else {
			resets++
		}
	}
	t.Logf("all %d target connections closed within %v of the kill (%d reset, %d EOF)", n, latest.Round(time.Millisecond), resets, eofs)
	if st := r.Hub.HubStatus(t); len(st.ConnectedEdges) != 0 {
		t.Errorf("hub still lists %+v", st.ConnectedEdges)
	}
	closed := 0
	for _, ev := range r.Hub.Events(hm) {
		if ev.Name == "streamClosed" {
			closed++
		}
	}
	if closed < n {
		t.Errorf("the hub reported streamClosed for %d of the %d streams", closed, n)
	}
	_, fds := r.Hub.WaitIdle(t, true, hubBase, 10*time.Second)
	t.Logf("hub fds: %d before the edge connected, %d after it was killed", hubBase, fds)
}

// TestParentKilled: the binary runs under a parent (sh) that holds the
// write end of its stdin; kill -9 of the parent closes that pipe, and the
// binary (running a hub and an edge with a stream open) exits 0 within 5 s.
func TestParentKilled(t *testing.T) {
	sh := requireTool(t, "sh", "dash")
	requireTool(t, "mkfifo", "coreutils")
	// Adopt orphans, so that the binary can be reaped here once sh is gone.
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", e)
	}
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0) })

	fifo := filepath.Join(t.TempDir(), "stdin")
	// sh creates the fifo, starts the binary reading it, opens its write end
	// (fd 3) and copies its own stdin there line by line with builtins only,
	// so that no other process holds the write end.
	script := `mkfifo "$1" || exit 1
"$2" --management < "$1" &
exec 3> "$1"
echo "child $!" >&2
while IFS= read -r line; do printf '%s\n' "$line" >&3; done`
	e := startEngineCmd(t, "binary-under-sh", exec.Command(sh, "-c", script, "sh", fifo, binPath))
	line, err := e.WaitLog(0, 5*time.Second, "child ")
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line.Text, "child ")))
	if err != nil {
		t.Fatalf("child pid from %q: %v", line.Text, err)
	}
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = syscall.Kill(child, syscall.SIGKILL) // the binary we started
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(child, &ws, 0, nil)
		}
	})

	port := testutil.FreePort(t, loopbacks...)
	target := newOpTarget(t, mustListen(t, "", hostPort("127.0.0.2", port)))
	secret := randomSecret()
	tport := e.StartHub(t, map[string]any{"tunnelPort": 0, "targetHost": "127.0.0.2"}, [2]string{"edge-pk", secret})
	e.StartEdge(t, map[string]any{"hubHost": "127.0.0.1", "hubPort": tport, "edgeId": "edge-pk", "secret": secret,
		"listenHost": "127.0.0.1", "listenPorts": []int{port}})
	e.MustWaitEvent(t, "tunnelConnected", 0, 10*time.Second)
	dial := loopbackDial(hostPort("127.0.0.1", port))
	mustOp(t, dial, target, opSpec{Kind: opX, Up: 1 << 20, Down: 1 << 20})
	held, _ := holdConn(t, dial, target)

	killAt := time.Now()
	if err := syscall.Kill(e.Pid(), syscall.SIGKILL); err != nil { // sh, the parent we started
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	exited := testutil.Poll(5*time.Second, func() bool {
		pid, err := syscall.Wait4(child, &ws, syscall.WNOHANG, nil)
		return pid == child && err == nil
	})
	if !exited {
		t.Fatalf("the binary (pid %d, state %q) still runs 5 s after its parent was killed", child, procState(child))
	}
	reaped = true
	t.Logf("parent killed; the binary exited %v later with %v", time.Since(killAt).Round(time.Millisecond), ws.ExitStatus())
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the binary ended with wait status %v (signaled %v), want exit code 0", ws.ExitStatus(), ws.Signaled())
	}
	_, err = waitClosed(held, 5*time.Second)
	t.Logf("the open stream's client was closed: %v", err)
	if _, err := e.WaitLog(0, 2*time.Second, "remoteingress-bin stopped"); err != nil {
		t.Errorf("no clean shutdown in the binary's log: %v", err)
	}
}

// TestResetDuringStalledTransfer: one side resets its connection while
// bytes to it are stalled in the tunnel (it stopped reading) and it has
// stopped writing itself (so that only its reader sees what arrives at
// the other end). PROTOCOL.md section 4: a reset by the client or the
// target aborts the stream with RESET, and the receiver resets its socket.
// The other end must see a reset, never a clean EOF: a FIN means "I
// finished sending", so a truncated upload or download would look complete.
// (Without the tunnel, client to target directly, the reader sees the reset
// every time.)
func TestResetDuringStalledTransfer(t *testing.T) {
	port := testutil.FreePort(t, loopbacks...)
	target := newOpTarget(t, mustListen(t, "", hostPort("127.0.0.2", port)))
	r := newRig(t, "", 0, "127.0.0.2", "edge-rst")
	edge := r.startEdge(t, "edge", "edge-rst", "", "127.0.0.1", map[string]any{"listenHost": "127.0.0.1", "listenPorts": []int{port}})
	dial := loopbackDial(hostPort("127.0.0.1", port))
	hubIdle, edgeIdle := r.Hub.settledFDs(t), edge.settledFDs(t)

	// tally runs 5 rounds of 20 concurrent streams of one scenario; each
	// reports whether the reading end saw a clean EOF ("" when it saw a reset).
	tally := func(t *testing.T, who string, one func() (eof string, err error)) {
		const rounds, parallel = 5, 20
		var mu sync.Mutex
		var eofs []string
		total := 0
		for round := 0; round < rounds; round++ {
			var wg sync.WaitGroup
			for i := 0; i < parallel; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					eof, err := one()
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Error(err)
						return
					}
					total++
					if eof != "" {
						eofs = append(eofs, eof)
					}
				}()
			}
			wg.Wait()
		}
		t.Logf("%d resets by the %s: the other end saw %d resets and %d clean EOFs", total, who, total-len(eofs), len(eofs))
		if len(eofs) > 0 {
			t.Errorf("%d of %d resets by the %s reached the other end as a clean EOF (a FIN), e.g.\n  %s",
				len(eofs), total, who, strings.Join(eofs[:min(3, len(eofs))], "\n  "))
		}
	}

	t.Run("client-resets", func(t *testing.T) {
		// The client sends 1 KiB and stops reading; the target sends until
		// its writes stall, then only reads; the client resets.
		tally(t, "client", func() (string, error) {
			c, err := dial()
			if err != nil {
				return "", err
			}
			defer c.Close()
			id := opIDs.Add(1)
			if _, err := fmt.Fprintf(c, "%c %d %d %d %d\n", opD, id, 1<<30, 64<<20, id); err != nil {
				return "", err
			}
			if _, err := writeGen(c, id, 1024); err != nil {
				return "", err
			}
			var rec *opRecord
			if !testutil.Poll(10*time.Second, func() bool { rec = target.record(id); return rec != nil }) {
				return "", fmt.Errorf("the target never saw op %d", id)
			}
			select {
			case <-rec.stalled:
			case <-time.After(20 * time.Second):
				return "", fmt.Errorf("op %d: the download never stalled", id)
			}
			time.Sleep(100 * time.Millisecond)
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
			rec, err = target.wait(id, 10*time.Second)
			switch {
			case err != nil:
				return "", err
			case rec.Mismatch:
				return "", fmt.Errorf("op %d: the upload arrived corrupted", id)
			case rec.CleanEOF:
				return fmt.Sprintf("op %d: the target read the %d upload bytes, then a clean EOF (it had sent %s)", id, rec.Received, mib(rec.Sent)), nil
			case isReset(rec.ReadErr):
				return "", nil
			default:
				return "", fmt.Errorf("op %d: the target's read ended with %v", id, rec.ReadErr)
			}
		})
	})

	t.Run("target-resets", func(t *testing.T) {
		// The target reads nothing; the client uploads until its writes
		// stall, then only reads; the target resets.
		tally(t, "target", func() (string, error) {
			c, err := dial()
			if err != nil {
				return "", err
			}
			defer c.Close()
			id := opIDs.Add(1)
			if _, err := fmt.Fprintf(c, "%c %d %d %d %d\n", opU, id, 1<<30, 0, id); err != nil {
				return "", err
			}
			g := genStream(id)
			buf := make([]byte, 32<<10)
			var sent int64
			for {
				_, _ = g.Read(buf)
				_ = c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := c.Write(buf)
				sent += int64(n)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						break // stalled
					}
					return "", fmt.Errorf("op %d: upload: %v", id, err)
				}
			}
			rec := target.record(id)
			if rec == nil {
				return "", fmt.Errorf("the target never saw op %d", id)
			}
			close(rec.resetNow)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, c)
			switch {
			case err == nil:
				return fmt.Sprintf("op %d: the client read %d bytes, then a clean EOF (it had uploaded %s)", id, n, mib(sent)), nil
			case isReset(err):
				return "", nil
			default:
				return "", fmt.Errorf("op %d: the client's read ended with %v", id, err)
			}
		})
	})

	r.Hub.WaitIdle(t, true, hubIdle, 15*time.Second)
	edge.WaitIdle(t, false, edgeIdle, 15*time.Second)
}

package systest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// startEdgeTimed starts an edge process for edgeID against the hub of r and
// returns it with the time startEdge was sent (the tunnel is not awaited).
func (r *rig) startEdgeTimed(t testing.TB, name, edgeID, netns, hubHost string, params map[string]any) (*Engine, time.Time) {
	t.Helper()
	e := startEngine(t, name, netns)
	p := map[string]any{"hubHost": hubHost, "hubPort": r.TunnelPort, "edgeId": edgeID, "secret": r.secrets[edgeID]}
	for k, v := range params {
		p[k] = v
	}
	at := time.Now()
	e.StartEdge(t, p)
	return e, at
}

// udpDrop drops, inside netns ns, every UDP datagram to port (iptables, or
// nftables when iptables is missing); the returned func removes the rule.
func udpDrop(t testing.TB, tp *topo, ns string, port int) (remove func()) {
	t.Helper()
	if tp.iptables != "" {
		rule := []string{"INPUT", "-p", "udp", "--dport", fmt.Sprint(port), "-j", "DROP"}
		mustRun(t, tp.ip, append([]string{"netns", "exec", ns, tp.iptables, "-w", "-I"}, rule...)...)
		return func() { mustRun(t, tp.ip, append([]string{"netns", "exec", ns, tp.iptables, "-w", "-D"}, rule...)...) }
	}
	nft := requireTool(t, "nft", "nftables")
	mustRun(t, tp.ip, "netns", "exec", ns, nft, "add table inet ristquic; add chain inet ristquic in { type filter hook input priority 0 ; } ; "+
		fmt.Sprintf("add rule inet ristquic in udp dport %d drop", port))
	return func() { mustRun(t, tp.ip, "netns", "exec", ns, nft, "delete table inet ristquic") }
}

// TestTwoHostsQUICFallback: contract section 10's transports where QUIC
// cannot get through, on the two-host topology.
//
//   - UDP to the hub's port dropped by a rule in the hub's namespace: an edge
//     with transport "auto" is up on TLS within quicFallbackMs + 1 s; once
//     the rule is gone and the tunnel reconnects (the hub process killed and
//     started again), it is back on QUIC.
//   - A hub started with quic: false (quicPort 0): an "auto" edge is up on
//     TLS within quicFallbackMs (default 3000) + 1 s; an edge with transport
//     "quic" never connects, and its lastError says that QUIC did not
//     complete its handshake.
func TestTwoHostsQUICFallback(t *testing.T) {
	tp := newTopo(t)
	target := newOpTarget(t, mustListen(t, tp.Hub, hostPort("127.0.0.1", nsAppPort)))
	tp.impair(t, 10*time.Millisecond, 0)

	t.Run("udp dropped", func(t *testing.T) {
		r := newRig(t, tp.Hub, nsTunnelPort, "127.0.0.1", "edge-auto")
		if st := r.Hub.HubStatus(t); st.QUICPort != r.TunnelPort {
			t.Fatalf("hub status quicPort %d, want the tunnel port %d", st.QUICPort, r.TunnelPort)
		}
		remove := udpDrop(t, tp, tp.Hub, r.TunnelPort)
		const fallback = 1500 * time.Millisecond
		hm := r.Hub.Mark()
		edge, at := r.startEdgeTimed(t, "edge", "edge-auto", tp.Edge, hubIP, map[string]any{
			"listenPorts": []int{nsAppPort}, "transport": "auto", "quicFallbackMs": fallback.Milliseconds()})
		ev := edge.MustWaitEvent(t, "tunnelConnected", 0, 15*time.Second)
		took := ev.At.Sub(at)
		t.Logf("UDP to the hub's port %d dropped: auto edge up %v after startEdge: %s", r.TunnelPort, took.Round(time.Millisecond), ev.Data)
		if took > fallback+time.Second {
			t.Errorf("the auto edge took %v to come up on TLS (want <= quicFallbackMs %v + 1 s)", took.Round(time.Millisecond), fallback)
		}
		if _, _, err := r.Hub.WaitEvent("edgeConnected", hm, 5*time.Second, nil); err != nil {
			t.Fatal(err)
		}
		checkTransport(t, edge, r.Hub, "edge-auto", "tls")
		dial := dialFrom(tp.Client, hostPort(edgeFront, nsAppPort))
		checkProxySrc(t, target, mustOp(t, dial, target, opSpec{Kind: opX, Up: 64 << 10, Down: 64 << 10}))

		remove()
		em := edge.Mark()
		r.Hub.Kill()
		r.restartHubProcess(t)
		ev, _, err := edge.WaitEvent("tunnelConnected", em, 30*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("rule removed, hub restarted: the edge reconnected: %s", ev.Data)
		if !testutil.Poll(5*time.Second, func() bool { return len(r.Hub.HubStatus(t).ConnectedEdges) == 1 }) {
			t.Fatalf("the restarted hub lists no edge")
		}
		checkTransport(t, edge, r.Hub, "edge-auto", "quic")
		checkProxySrc(t, target, mustOp(t, dial, target, opSpec{Kind: opX, Up: 64 << 10, Down: 64 << 10}))
	})

	t.Run("hub without quic", func(t *testing.T) {
		r := newRigWith(t, tp.Hub, map[string]any{"tunnelPort": nsTunnelPort + 1, "targetHost": "127.0.0.1", "quic": false},
			"edge-auto", "edge-quic")
		if st := r.Hub.HubStatus(t); st.QUICPort != 0 {
			t.Fatalf("hub with quic: false: status quicPort %d, want 0", st.QUICPort)
		}
		// Both edges at once: the "quic" one fails while the "auto" one falls back.
		qedge, _ := r.startEdgeTimed(t, "edge-quic", "edge-quic", tp.Edge, hubIP, map[string]any{
			"listenPorts": []int{nsAppPort + 1}, "transport": "quic"})
		aedge, at := r.startEdgeTimed(t, "edge-auto", "edge-auto", tp.Edge, hubIP, map[string]any{
			"listenPorts": []int{nsAppPort}, "transport": "auto"})
		ev := aedge.MustWaitEvent(t, "tunnelConnected", 0, 15*time.Second)
		took := ev.At.Sub(at)
		t.Logf("hub with quic: false: auto edge (default quicFallbackMs) up %v after startEdge: %s", took.Round(time.Millisecond), ev.Data)
		if took > 4*time.Second {
			t.Errorf("the auto edge took %v to come up on TLS (want <= quicFallbackMs 3 s + 1 s)", took.Round(time.Millisecond))
		}
		if !testutil.Poll(5*time.Second, func() bool { return len(r.Hub.HubStatus(t).ConnectedEdges) == 1 }) {
			t.Fatalf("the hub does not list the auto edge")
		}
		checkTransport(t, aedge, r.Hub, "edge-auto", "tls")
		checkProxySrc(t, target, mustOp(t, dialFrom(tp.Client, hostPort(edgeFront, nsAppPort)), target,
			opSpec{Kind: opX, Up: 64 << 10, Down: 64 << 10}))

		var st EdgeStatus
		if !testutil.Poll(20*time.Second, func() bool { st = qedge.EdgeStatus(t); return st.LastError != "" }) {
			t.Fatalf("the quic edge has no lastError after 20 s: %+v", st)
		}
		t.Logf("quic edge against a hub without QUIC: connected %v, transport %s, lastError %q, reconnectAttempts %d",
			st.Connected, strPtr(st.Transport), st.LastError, st.ReconnectAttempts)
		if st.Connected || st.Transport != nil {
			t.Errorf("the quic edge reports a tunnel: %+v", st)
		}
		if !strings.Contains(st.LastError, "QUIC") {
			t.Errorf("lastError %q does not say that QUIC failed", st.LastError)
		}
		for _, e := range qedge.Events(0) {
			if e.Name == "tunnelConnected" {
				t.Errorf("the quic edge connected: %s", e.Data)
			}
		}
		for _, ce := range r.Hub.HubStatus(t).ConnectedEdges {
			if ce.EdgeID == "edge-quic" {
				t.Errorf("the hub lists the quic edge: %+v", ce)
			}
		}
	})
}

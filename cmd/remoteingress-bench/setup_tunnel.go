package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// tunnelEdgeID is the edge id the bench configures.
const tunnelEdgeID = "bench-edge"

// setupTunnel starts a hub and an edge process of bin: the edge listens on
// 127.0.0.1:P, the hub dials 127.0.0.2:P where the PROXY-parsing target
// listens, STUN points at a closed local UDP port. The edge uses conns TLS
// connections (0: the binary's default); name is the set-up's and suffix its processes' (hub<suffix>).
// With metrics, hub and edge each run a metricsListen on 127.0.0.1:0; their
// bound addresses are in the mode's metricsAddrs. edgeExtra are more
// startEdge params (nil: none).
func setupTunnel(kids *children, bin, name, suffix string, conns int, metrics bool, edgeExtra map[string]any) (*mode, error) {
	return setupTunnelHubs(kids, bin, name, suffix, 1, conns, metrics, edgeExtra)
}

// startHubProc starts a hub process labelled label that allows the bench's
// edge with secret and runs startHub on tunnelPort (0: any free port),
// retrying for up to 10 s while that port is still taken (a restart on
// the port of a hub that was killed). It returns the bound tunnel port and
// the metrics address ("" without metrics).
func startHubProc(kids *children, bin, label, secret string, tunnelPort int, metrics bool) (*mgmt, int, string, error) {
	hub, err := startMgmt(kids, label, bin)
	if err != nil {
		return nil, 0, "", err
	}
	if _, err := hub.call("updateAllowedEdges", map[string]any{
		"edges": []map[string]string{{"id": tunnelEdgeID, "secret": secret}},
	}, 10*time.Second); err != nil {
		return nil, 0, "", err
	}
	params := map[string]any{"tunnelPort": tunnelPort, "targetHost": "127.0.0.2", "listenHost": "127.0.0.1"}
	if metrics {
		params["metricsListen"] = "127.0.0.1:0"
	}
	var raw []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		raw, err = hub.call("startHub", params, 10*time.Second)
		if err == nil || tunnelPort == 0 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return nil, 0, "", err
	}
	var hr struct {
		TunnelPort     int    `json:"tunnelPort"`
		MetricsAddress string `json:"metricsAddress"`
	}
	if err := json.Unmarshal(raw, &hr); err != nil || hr.TunnelPort == 0 || metrics != (hr.MetricsAddress != "") {
		return nil, 0, "", fmt.Errorf("startHub answered %s", raw)
	}
	return hub, hr.TunnelPort, hr.MetricsAddress, nil
}

// hubLabel is the process label of hub i of n (hub<suffix> for one hub,
// hubA<suffix>, hubB<suffix>, ... for several).
func hubLabel(i, n int, suffix string) string {
	if n == 1 {
		return "hub" + suffix
	}
	return "hub" + string(rune('A'+i)) + suffix
}

// setupTunnelHubs is setupTunnel with nHubs hub processes: with more than
// one the edge gets startEdge hubs (every hub's 127.0.0.1:port, in order;
// hubMode from edgeExtra, else the binary's default, spread) instead of
// hubHost/hubPort, and the set-up is ready once every hub has its tunnel.
func setupTunnelHubs(kids *children, bin, name, suffix string, nHubs, conns int, metrics bool, edgeExtra map[string]any) (*mode, error) {
	var metricsAddrs []string
	secretBytes := make([]byte, 24)
	rand.Read(secretBytes)
	secret := hex.EncodeToString(secretBytes)
	stunPort, err := closedUDPPort()
	if err != nil {
		return nil, err
	}

	var (
		hubs     []*mgmt
		hubPorts []int
		hubAddrs []string
	)
	for i := range nHubs {
		hub, port, maddr, err := startHubProc(kids, bin, hubLabel(i, nHubs, suffix), secret, 0, metrics)
		if err != nil {
			return nil, err
		}
		if metrics {
			metricsAddrs = append(metricsAddrs, maddr)
		}
		hubs = append(hubs, hub)
		hubPorts = append(hubPorts, port)
		hubAddrs = append(hubAddrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}

	edge, err := startMgmt(kids, "edge"+suffix, bin)
	if err != nil {
		return nil, err
	}
	// The edge's port P must be free on 127.0.0.1 and the target's on
	// 127.0.0.2: take a free one for the target, retry if the edge cannot
	// bind the same number.
	var tgt *target
	for attempt := 0; ; attempt++ {
		tgt, err = listenTarget("127.0.0.2:0", true)
		if err != nil {
			return nil, err
		}
		params := map[string]any{
			"edgeId": tunnelEdgeID, "secret": secret,
			"listenPorts": []int{tgt.port()}, "listenHost": "127.0.0.1",
			"stunServer": "127.0.0.1:" + strconv.Itoa(stunPort), "stunIntervalSecs": 300,
		}
		if nHubs == 1 {
			params["hubHost"], params["hubPort"] = "127.0.0.1", hubPorts[0]
		} else {
			params["hubs"] = hubAddrs
		}
		if conns > 0 {
			params["tunnelConnections"] = conns // else the binary's default
		}
		if metrics {
			params["metricsListen"] = "127.0.0.1:0"
		}
		for k, v := range edgeExtra {
			params[k] = v
		}
		raw, err := edge.call("startEdge", params, 10*time.Second)
		if err == nil {
			var er struct {
				MetricsAddress string `json:"metricsAddress"`
			}
			if err := json.Unmarshal(raw, &er); err != nil || metrics != (er.MetricsAddress != "") {
				tgt.close()
				return nil, fmt.Errorf("startEdge answered %s", raw)
			}
			if metrics {
				metricsAddrs = append(metricsAddrs, er.MetricsAddress)
			}
			break
		}
		tgt.close()
		if attempt == 4 || !strings.Contains(err.Error(), "listen") {
			return nil, err
		}
	}
	for _, hub := range hubs {
		if err := hub.waitEvent("edgeConnected", 1, 15*time.Second); err != nil {
			tgt.close()
			return nil, err
		}
	}
	if err := edge.waitEvent("tunnelConnected", int64(nHubs), 15*time.Second); err != nil {
		tgt.close()
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tgt.port()))
	procs := []*child{}
	hubPids := []int{}
	for _, h := range hubs {
		procs = append(procs, h.child)
		hubPids = append(hubPids, h.pid())
	}
	procs = append(procs, edge.child)
	info := map[string]any{
		"metricsListen": metricsAddrs,
		"edgeListen":    addr, "target": tgt.ln.Addr().String(),
		"hubTunnel":  hubAddrs[0],
		"stunServer": "127.0.0.1:" + strconv.Itoa(stunPort) + " (closed)",
		"hubPid":     hubs[0].pid(), "edgePid": edge.pid(), "version": hubs[0].version, "tunnelConnections": conns,
		"proxyHeader":     "PROXY v1, written by the hub, parsed and checked by the target",
		"edgeExtraParams": edgeExtra,
	}
	if nHubs > 1 {
		info["hubs"], info["hubPids"] = hubAddrs, hubPids
	}
	return &mode{name: name, addr: addr, tgt: tgt, procs: procs, hub: hubs[0], edge: edge,
		hubs: hubs, allHubs: slices.Clone(hubs), hubAddrs: hubAddrs, hubPorts: hubPorts,
		metricsAddrs: metricsAddrs, secret: secret, info: info}, nil
}

// closedUDPPort returns a local UDP port nothing listens on.
func closedUDPPort() (int, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	return port, pc.Close()
}

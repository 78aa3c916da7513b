package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
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
	withMetrics := func(p map[string]any) map[string]any {
		if metrics {
			p["metricsListen"] = "127.0.0.1:0"
		}
		return p
	}
	var metricsAddrs []string
	secretBytes := make([]byte, 24)
	rand.Read(secretBytes)
	secret := hex.EncodeToString(secretBytes)
	stunPort, err := closedUDPPort()
	if err != nil {
		return nil, err
	}

	hub, err := startMgmt(kids, "hub"+suffix, bin)
	if err != nil {
		return nil, err
	}
	if _, err := hub.call("updateAllowedEdges", map[string]any{
		"edges": []map[string]string{{"id": tunnelEdgeID, "secret": secret}},
	}, 10*time.Second); err != nil {
		return nil, err
	}
	raw, err := hub.call("startHub", withMetrics(map[string]any{
		"tunnelPort": 0, "targetHost": "127.0.0.2", "listenHost": "127.0.0.1",
	}), 10*time.Second)
	if err != nil {
		return nil, err
	}
	var hr struct {
		TunnelPort     int    `json:"tunnelPort"`
		MetricsAddress string `json:"metricsAddress"`
	}
	if err := json.Unmarshal(raw, &hr); err != nil || hr.TunnelPort == 0 || metrics != (hr.MetricsAddress != "") {
		return nil, fmt.Errorf("startHub answered %s", raw)
	}
	if metrics {
		metricsAddrs = append(metricsAddrs, hr.MetricsAddress)
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
			"hubHost": "127.0.0.1", "hubPort": hr.TunnelPort,
			"edgeId": tunnelEdgeID, "secret": secret,
			"listenPorts": []int{tgt.port()}, "listenHost": "127.0.0.1",
			"stunServer": "127.0.0.1:" + strconv.Itoa(stunPort), "stunIntervalSecs": 300,
		}
		if conns > 0 {
			params["tunnelConnections"] = conns // else the binary's default
		}
		for k, v := range edgeExtra {
			params[k] = v
		}
		raw, err = edge.call("startEdge", withMetrics(params), 10*time.Second)
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
	if err := hub.waitEvent("edgeConnected", 1, 15*time.Second); err != nil {
		tgt.close()
		return nil, err
	}
	if err := edge.waitEvent("tunnelConnected", 1, 15*time.Second); err != nil {
		tgt.close()
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tgt.port()))
	return &mode{name: name, addr: addr, tgt: tgt, procs: []*child{hub.child, edge.child}, hub: hub, edge: edge,
		metricsAddrs: metricsAddrs, secret: secret,
		info: map[string]any{
			"metricsListen": metricsAddrs,
			"edgeListen":    addr, "target": tgt.ln.Addr().String(),
			"hubTunnel":  net.JoinHostPort("127.0.0.1", strconv.Itoa(hr.TunnelPort)),
			"stunServer": "127.0.0.1:" + strconv.Itoa(stunPort) + " (closed)",
			"hubPid":     hub.pid(), "edgePid": edge.pid(), "version": hub.version, "tunnelConnections": conns,
			"proxyHeader":     "PROXY v1, written by the hub, parsed and checked by the target",
			"edgeExtraParams": edgeExtra,
		}}, nil
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

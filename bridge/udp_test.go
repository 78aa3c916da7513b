package bridge

import (
	"encoding/json"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// startHub and startEdge take the UDP params, and a datagram sent to the
// edge's UDP port comes back from a target behind the hub; the status
// methods count the flow.
func TestRealUDPThroughTheBridge(t *testing.T) {
	const secret = "udp-bridge-secret-91c4"
	port := testutil.FreeUDPPort(t, "127.0.0.1", "127.0.0.2")
	target, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := target.ReadFromUDP(buf)
			if err != nil {
				return
			}
			target.WriteToUDP(buf[:n], from) // udpProxyProtocol "none": no header to strip
		}
	}()
	s := startSession(t, Management, tunnelEngine())
	s.skipReady()
	s.mustCall("updateAllowedEdges", edgesParam("edge-1", secret))
	for _, bad := range []map[string]any{{"udpProxyProtocol": "sometimes"}, {"udpIdleTimeoutSecs": -1}, {"maxUdpFlows": 0}} {
		if r := s.call("startHub", bad); r.ok {
			t.Fatalf("startHub %v succeeded", bad)
		}
	}
	var started struct {
		TunnelPort int `json:"tunnelPort"`
	}
	if err := json.Unmarshal(s.mustCall("startHub", map[string]any{"tunnelPort": 0, "listenHost": "127.0.0.1", "targetHost": "127.0.0.2",
		"udpProxyProtocol": "none", "udpIdleTimeoutSecs": 30, "maxUdpFlows": 100}), &started); err != nil {
		t.Fatal(err)
	}
	params := realEdgeParams(started.TunnelPort, 0, secret)
	delete(params, "listenPorts")
	params["listenPortsUdp"] = []int{port}
	params["udpIdleTimeoutSecs"] = 30
	params["maxUdpFlows"] = 100
	params["firewallBackend"] = "process"
	s.mustCall("startEdge", params)
	s.waitFor(func(m msg) bool { return m.Event == "tunnelConnected" })
	if diff := diffFields(t, `{"activeUdpFlows":0,"udpDatagramsDropped":0,"listenPortsUdp":[`+strconv.Itoa(port)+`]}`, s.mustCall("getEdgeStatus", nil)); diff != "" {
		t.Fatalf("getEdgeStatus (-want +got):\n%s", diff)
	}
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 100)
	got := ""
	for try := 0; try < 20 && got == ""; try++ {
		c.Write([]byte("ping over udp"))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "ping over udp" {
		t.Fatalf("echo %q", got)
	}
	if diff := diffFields(t, `{"activeUdpFlows":1}`, s.mustCall("getEdgeStatus", nil)); diff != "" {
		t.Fatalf("getEdgeStatus (-want +got):\n%s", diff)
	}
	var hub struct {
		ConnectedEdges []struct {
			ActiveUDPFlows      *int `json:"activeUdpFlows"`
			UDPDatagramsDropped *int `json:"udpDatagramsDropped"`
		} `json:"connectedEdges"`
	}
	raw := s.mustCall("getHubStatus", nil)
	if err := json.Unmarshal(raw, &hub); err != nil || len(hub.ConnectedEdges) != 1 || hub.ConnectedEdges[0].ActiveUDPFlows == nil ||
		*hub.ConnectedEdges[0].ActiveUDPFlows != 1 || hub.ConnectedEdges[0].UDPDatagramsDropped == nil || *hub.ConnectedEdges[0].UDPDatagramsDropped != 0 {
		t.Fatalf("getHubStatus %s, want activeUdpFlows 1 and udpDatagramsDropped 0", raw)
	}
	s.mustCall("stopEdge", nil)
	s.mustCall("stopHub", nil)
	s.finish(t, secret)
}

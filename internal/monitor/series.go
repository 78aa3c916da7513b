package monitor

import (
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/serve-zone/remoteingress/tunnel"
)

// The series, by family. Every family of a side attached is written from
// the start, with 0 until something happens; per-edge series of the hub
// exist for each edge id of its allowed list.
const (
	nameBuildInfo       = "remoteingress_build_info"
	nameEdgesConnected  = "remoteingress_hub_edges_connected"
	nameAuthFailures    = "remoteingress_hub_auth_failures_total"
	nameTunnelUp        = "remoteingress_edge_tunnel_up"
	nameReconnects      = "remoteingress_edge_reconnects_total"
	nameStreamsActive   = "remoteingress_streams_active"
	nameStreamsTotal    = "remoteingress_streams_total"
	nameBytes           = "remoteingress_bytes_total"
	nameUDPFlowsActive  = "remoteingress_udp_flows_active"
	nameFirewallRefused = "remoteingress_firewall_refused_total"
)

// family is one metric family being written: its HELP and TYPE come first.
type family struct {
	w    io.Writer
	name string
}

func newFamily(w io.Writer, name, typ, help string) family {
	_, _ = io.WriteString(w, "# HELP "+name+" "+help+"\n# TYPE "+name+" "+typ+"\n")
	return family{w: w, name: name}
}

// sample writes one series; labels are name, value pairs.
func (f family) sample(v uint64, labels ...string) {
	var b strings.Builder
	b.WriteString(f.name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(labels[i])
			b.WriteString(`="`)
			b.WriteString(escapeLabel(labels[i+1]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(v, 10))
	b.WriteByte('\n')
	_, _ = io.WriteString(f.w, b.String())
}

// labelEscaper escapes a label value as the text format wants it.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(v string) string {
	return labelEscaper.Replace(strings.ToValidUTF8(v, "\uFFFD"))
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// sideStreams is one set of stream counters and its labels.
type sideStreams struct {
	labels []string // side, and edge_id
	m      tunnel.StreamMetrics
}

// writeSeries writes the remoteingress_* families for the sides given (nil:
// not running here).
func writeSeries(w io.Writer, version string, hub *tunnel.HubMetrics, edge *tunnel.EdgeMetrics) {
	newFamily(w, nameBuildInfo, "gauge", "Always 1; the labels say which build runs.").
		sample(1, "version", version, "goversion", runtime.Version())

	var streams []sideStreams
	if hub != nil {
		newFamily(w, nameEdgesConnected, "gauge", "Edges with a tunnel up to this hub.").
			sample(uint64(hub.EdgesConnected))
		newFamily(w, nameAuthFailures, "counter", "Edge proofs the hub found wrong or for an unknown edge id.").
			sample(hub.AuthFailures)
		for _, e := range hub.Edges {
			streams = append(streams, sideStreams{labels: []string{"side", "hub", "edge_id", e.EdgeID}, m: e.StreamMetrics})
		}
	}
	if edge != nil {
		id := []string{"edge_id", edge.EdgeID}
		newFamily(w, nameTunnelUp, "gauge", "1 while the edge's tunnel to the hub is up.").
			sample(b2u(edge.TunnelUp), id...)
		newFamily(w, nameReconnects, "counter", "Tunnel connection attempts after the first (retries after a failure or a lost tunnel).").
			sample(edge.Reconnects, id...)
		newFamily(w, nameFirewallRefused, "counter", "Client connections and flows refused by the edge firewall.").
			sample(edge.FirewallRefused, id...)
		streams = append(streams, sideStreams{labels: []string{"side", "edge", "edge_id", edge.EdgeID}, m: edge.StreamMetrics})
	}
	if hub == nil && edge == nil {
		return
	}
	f := newFamily(w, nameStreamsActive, "gauge", "Streams (client TCP connections) open now.")
	for _, s := range streams {
		f.sample(s.m.StreamsActive, s.labels...)
	}
	f = newFamily(w, nameStreamsTotal, "counter", "Streams (client TCP connections) opened.")
	for _, s := range streams {
		f.sample(s.m.StreamsTotal, s.labels...)
	}
	f = newFamily(w, nameBytes, "counter", `Stream payload bytes: direction "in" from clients toward targets, "out" back to clients.`)
	for _, s := range streams {
		f.sample(s.m.BytesIn, slices.Concat(s.labels, []string{"direction", "in"})...)
		f.sample(s.m.BytesOut, slices.Concat(s.labels, []string{"direction", "out"})...)
	}
	f = newFamily(w, nameUDPFlowsActive, "gauge", "UDP flows open now.")
	for _, s := range streams {
		f.sample(s.m.UDPFlowsActive, s.labels...)
	}
}

package tunnel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/serve-zone/remoteingress/tunnel/firewall"
)

// Hub-managed edges (PROTOCOL.md section 9). The hub tells an edge that
// announced capAssign what it decides for it, in ASSIGN: its ports (or that
// they are the edge's own) and its firewall. The edge answers every ASSIGN,
// and tells the hub at connect, with BOUND: the ports it has bound now. Both
// payloads are JSON objects; unknown members are ignored, so that later
// versions can add to them.

const (
	// maxAssignLen is the largest ASSIGN payload: room for some 150 000
	// blocked CIDRs. The hub refuses an allow list entry that needs more.
	maxAssignLen = 4 << 20
	// maxBoundLen is the largest BOUND payload: every port of both lists.
	maxBoundLen = 1 << 20
)

// assignMsg is the payload of ASSIGN.
type assignMsg struct {
	// Seq orders the assignments of one tunnel: the edge ignores one whose
	// Seq is not above the last it applied.
	Seq uint64 `json:"seq"`
	// Ports are the assigned ports; nil: the edge's own.
	Ports *portLists `json:"ports,omitempty"`
	// Firewall is nil for none.
	Firewall *firewall.Rules `json:"firewall,omitempty"`
}

// portLists is a TCP and a UDP port list, in ASSIGN and BOUND.
type portLists struct {
	TCP []int `json:"tcp"`
	UDP []int `json:"udp"`
}

// boundMsg is the payload of BOUND: the ports the edge has bound, after the
// assignment Seq (0 before any).
type boundMsg struct {
	Seq uint64 `json:"seq"`
	portLists
}

// assignFor is the assignment of an allow list entry, without its Seq.
func assignFor(c EdgeCredential) assignMsg {
	var m assignMsg
	if c.Ports != nil {
		m.Ports = &portLists{TCP: nonNil(c.Ports.TCP), UDP: nonNil(c.Ports.UDP)}
	}
	m.Firewall = c.Firewall
	return m
}

// encodeAssign is the ASSIGN payload of m with seq.
func encodeAssign(m assignMsg, seq uint64) []byte {
	m.Seq = seq
	b, err := json.Marshal(m)
	if err != nil { // plain ints and strings cannot fail
		panic(err)
	}
	return b
}

// parseAssign decodes and checks an ASSIGN payload.
func parseAssign(p []byte) (assignMsg, error) {
	var m assignMsg
	if err := decodeJSON(p, &m); err != nil {
		return assignMsg{}, fmt.Errorf("malformed ASSIGN: %v", err)
	}
	if m.Ports != nil {
		if err := checkPortList("tcp", m.Ports.TCP); err != nil {
			return assignMsg{}, fmt.Errorf("malformed ASSIGN: ports.%v", err)
		}
		if err := checkPortList("udp", m.Ports.UDP); err != nil {
			return assignMsg{}, fmt.Errorf("malformed ASSIGN: ports.%v", err)
		}
	}
	if m.Firewall != nil {
		if err := m.Firewall.Validate(); err != nil {
			return assignMsg{}, fmt.Errorf("malformed ASSIGN: firewall.%v", err)
		}
	}
	return m, nil
}

// encodeBound is the BOUND payload of m.
func encodeBound(m boundMsg) []byte {
	m.TCP, m.UDP = nonNil(m.TCP), nonNil(m.UDP)
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// parseBound decodes and checks a BOUND payload.
func parseBound(p []byte) (boundMsg, error) {
	var m boundMsg
	if err := decodeJSON(p, &m); err != nil {
		return boundMsg{}, fmt.Errorf("malformed BOUND: %v", err)
	}
	if err := checkPortList("tcp", m.TCP); err != nil {
		return boundMsg{}, fmt.Errorf("malformed BOUND: %v", err)
	}
	if err := checkPortList("udp", m.UDP); err != nil {
		return boundMsg{}, fmt.Errorf("malformed BOUND: %v", err)
	}
	m.TCP, m.UDP = nonNil(m.TCP), nonNil(m.UDP)
	return m, nil
}

// decodeJSON decodes exactly one JSON object from p into v.
func decodeJSON(p []byte, v any) error {
	p = bytes.TrimSpace(p)
	if len(p) == 0 || p[0] != '{' {
		return fmt.Errorf("not a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(p))
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("data after the JSON object")
	}
	return nil
}

// sameAssign reports whether a and b assign the same (Seq aside).
func sameAssign(a, b assignMsg) bool {
	return bytes.Equal(encodeAssign(a, 0), encodeAssign(b, 0))
}

func nonNil(ports []int) []int {
	if ports == nil {
		return []int{}
	}
	return slices.Clone(ports)
}

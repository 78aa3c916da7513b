package bridge

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/serve-zone/remoteingress/tunnel"
)

// paramReader decodes a method's params: each accessor checks the JSON type
// of one field and stores it in the engine's config, and the first problem
// is kept as a -32602 error naming the field. What a value may be (ports
// 1-65535, non-empty ids, unique edges...) is the engine's to say: see
// checkConfig. Unknown fields are ignored; absent and null fields leave the
// engine's default in place.
type paramReader struct {
	method string
	fields map[string]json.RawMessage
	err    error
}

// readParams starts decoding raw, which must be absent, null or a JSON object.
func readParams(method string, raw *json.RawMessage) *paramReader {
	p := &paramReader{method: method, fields: map[string]json.RawMessage{}}
	if raw == nil || isNull(*raw) {
		return p
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(*raw, &fields); err != nil || fields == nil {
		p.err = invalidParams("%s: params must be a JSON object", method)
		return p
	}
	p.fields = fields
	return p
}

// fail records the first problem.
func (p *paramReader) fail(format string, args ...any) {
	if p.err == nil {
		p.err = invalidParams(p.method+": "+format, args...)
	}
}

// value returns the field's raw value; ok is false when it is absent or null.
func (p *paramReader) value(name string) (json.RawMessage, bool) {
	raw, ok := p.fields[name]
	if !ok || isNull(raw) {
		return nil, false
	}
	return raw, true
}

// required records a missing field.
func (p *paramReader) required(name string) {
	p.fail("%s is required", name)
}

// str reads a string field into dst. An empty optional string leaves dst
// alone, like an absent one; an empty required string is stored, for the
// engine to refuse.
func (p *paramReader) str(name string, required bool, dst *string) {
	s, problem := stringField(p.fields, name, required)
	switch {
	case problem != "":
		p.fail("%s", problem)
	case s != "" || required:
		*dst = s
	}
}

// stringField reads a string member of fields, returning what is wrong with
// its type or presence (naming the field) or "".
func stringField(fields map[string]json.RawMessage, name string, required bool) (string, string) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		if required {
			return "", name + " is required"
		}
		return "", ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", name + " must be a string"
	}
	return s, ""
}

// integer reads an optional integer field into dst.
func (p *paramReader) integer(name string, dst *int) {
	raw, ok := p.value(name)
	if !ok {
		return
	}
	n, ok := intValue(raw)
	if !ok {
		p.fail("%s must be an integer", name)
		return
	}
	*dst = n
}

// seconds reads an optional whole number of seconds, 0 to maxSeconds, into
// dst; 0 is stored as off (a negative duration).
func (p *paramReader) seconds(name string, dst *time.Duration) {
	raw, ok := p.value(name)
	if !ok {
		return
	}
	n, ok := intValue(raw)
	if !ok || n < 0 || n > maxSeconds {
		p.fail("%s must be an integer 0-%d", name, maxSeconds)
		return
	}
	*dst = time.Duration(n) * time.Second
	if n == 0 {
		*dst = -1
	}
}

// maxSeconds is the largest whole number of seconds a param may give.
const maxSeconds = math.MaxInt32

// ints reads a required array of integers into dst.
func (p *paramReader) ints(name string, dst *[]int) {
	raw, ok := p.value(name)
	if !ok {
		p.required(name)
		return
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		p.fail("%s must be an array of integers", name)
		return
	}
	out := make([]int, 0, len(items))
	for i, item := range items {
		n, ok := intValue(item)
		if !ok {
			p.fail("%s[%d] must be an integer", name, i)
			return
		}
		out = append(out, n)
	}
	*dst = out
}

// edges reads a required array of {id, secret} objects with string ids and
// secrets. Messages name edges by index and id, never by secret.
func (p *paramReader) edges(name string) []tunnel.EdgeCredential {
	raw, ok := p.value(name)
	if !ok {
		p.required(name)
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		p.fail("%s must be an array of {id, secret} objects", name)
		return nil
	}
	edges := make([]tunnel.EdgeCredential, 0, len(items))
	for i, item := range items {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(item, &fields); err != nil || fields == nil {
			p.fail("%s[%d] must be an object {id, secret}", name, i)
			return nil
		}
		id, problem := stringField(fields, "id", true)
		if problem != "" {
			p.fail("%s[%d].%s", name, i, problem)
			return nil
		}
		secret, problem := stringField(fields, "secret", true)
		if problem != "" {
			p.fail("%s[%d].%s (edge %q)", name, i, problem, id)
			return nil
		}
		edges = append(edges, tunnel.EdgeCredential{ID: id, Secret: secret})
	}
	return edges
}

// done returns the first problem, if any.
func (p *paramReader) done() error { return p.err }

// checkConfig turns the engine's verdict on a config into the method's
// answer: a *tunnel.ConfigError becomes a -32602 error naming the param;
// other errors pass through.
func checkConfig(method string, err error) error {
	var ce *tunnel.ConfigError
	if err == nil || !errors.As(err, &ce) {
		return err
	}
	msg := paramPath(ce.Field) + " " + ce.Msg
	if ce.Ref != "" {
		msg += " " + paramPath(ce.Ref)
	}
	return invalidParams("%s: %s", method, msg)
}

// paramNames maps the engine's config field names to the params they come from.
var paramNames = map[string]string{
	// startHub
	"TunnelPort": "tunnelPort",
	"TargetHost": "targetHost",
	"ListenHost": "listenHost",
	"TLSCertPEM": "tlsCertPem",
	"TLSKeyPEM":  "tlsKeyPem",
	// updateAllowedEdges
	"Edges":  "edges",
	"ID":     "id",
	"Secret": "secret",
	// startEdge (and ListenHost, Secret)
	"HubHost":       "hubHost",
	"HubPort":       "hubPort",
	"EdgeID":        "edgeId",
	"ListenPorts":   "listenPorts",
	"StunServer":    "stunServer",
	"StunInterval":  "stunIntervalSecs",
	"HubCertSHA256": "hubCertSha256",
	"HubCAPEM":      "hubCa",
	"HubServerName": "hubServerName",
	"Connections":   "tunnelConnections",
	// both
	"MetricsListen": "metricsListen",
}

// paramPath renders an engine field path ("Edges[1].Secret") with param
// names ("edges[1].secret"); names without a param are kept.
func paramPath(field string) string {
	parts := strings.Split(field, ".")
	for i, part := range parts {
		name, index, _ := strings.Cut(part, "[")
		if param, ok := paramNames[name]; ok {
			name = param
		}
		if index != "" {
			name += "[" + index
		}
		parts[i] = name
	}
	return strings.Join(parts, ".")
}

// intValue parses a JSON number that is an integer (80 and 80.0, not 80.5).
// Integers beyond ±2^53 are clamped there: out of every range the engine
// accepts, and exact in a float64.
func intValue(raw json.RawMessage) (int, bool) {
	s := string(raw)
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return 0, false // not a JSON number
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || math.IsNaN(f) || f != math.Trunc(f) {
		return 0, false
	}
	return int(max(min(f, 1<<53), -(1 << 53))), true
}

package bridge

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/serve-zone/remoteingress/tunnel"
)

// paramReader decodes a method's params strictly: each accessor checks one
// field, and the first problem is kept as a -32602 error naming the field.
// Unknown fields are ignored; absent and null fields take their default.
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

// str reads a string field; an absent or empty optional field gives def.
func (p *paramReader) str(name string, required bool, def string) string {
	s, problem := stringField(p.fields, name, required, def)
	if problem != "" {
		p.fail("%s", problem)
	}
	return s
}

// stringField reads a string member of fields, returning what is wrong with
// it (naming the field) or "".
func stringField(fields map[string]json.RawMessage, name string, required bool, def string) (string, string) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		if required {
			return def, name + " is required"
		}
		return def, ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return def, name + " must be a string"
	}
	if s == "" {
		if required {
			return def, name + " must not be empty"
		}
		return def, ""
	}
	return s, ""
}

// integer reads an integer field in [lo, hi].
func (p *paramReader) integer(name string, lo, hi int, required bool, def int) int {
	raw, ok := p.value(name)
	if !ok {
		if required {
			p.required(name)
		}
		return def
	}
	n, ok := intValue(raw)
	if !ok || n < int64(lo) || n > int64(hi) {
		p.fail("%s must be an integer %d-%d", name, lo, hi)
		return def
	}
	return int(n)
}

// ports reads a required, non-empty array of distinct ports 1-65535.
func (p *paramReader) ports(name string) []int {
	raw, ok := p.value(name)
	if !ok {
		p.required(name)
		return nil
	}
	bad := func() []int {
		p.fail("%s must be an array of integers 1-65535", name)
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return bad()
	}
	if len(items) == 0 {
		p.fail("%s must not be empty", name)
		return nil
	}
	ports := make([]int, 0, len(items))
	seen := make(map[int]bool, len(items))
	for _, item := range items {
		n, ok := intValue(item)
		if !ok || n < 1 || n > 65535 {
			return bad()
		}
		if seen[int(n)] {
			p.fail("%s lists port %d twice", name, n)
			return nil
		}
		seen[int(n)] = true
		ports = append(ports, int(n))
	}
	return ports
}

// edges reads a required array of {id, secret} objects, each with a
// non-empty id and secret, ids unique. Messages name edges by index and id,
// never by secret.
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
	seen := make(map[string]int, len(items))
	for i, item := range items {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(item, &fields); err != nil || fields == nil {
			p.fail("%s[%d] must be an object {id, secret}", name, i)
			return nil
		}
		id, problem := stringField(fields, "id", true, "")
		if problem != "" {
			p.fail("%s[%d].%s", name, i, problem)
			return nil
		}
		secret, problem := stringField(fields, "secret", true, "")
		if problem != "" {
			p.fail("%s[%d].%s (edge %q)", name, i, problem, id)
			return nil
		}
		if first, dup := seen[id]; dup {
			p.fail("%s[%d].id %q duplicates %s[%d].id", name, i, id, name, first)
			return nil
		}
		seen[id] = i
		edges = append(edges, tunnel.EdgeCredential{ID: id, Secret: secret})
	}
	return edges
}

// done returns the first problem, if any.
func (p *paramReader) done() error { return p.err }

// intValue parses a JSON number that is an integer (80 and 80.0, not 80.5).
func intValue(raw json.RawMessage) (int64, bool) {
	s := string(raw)
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return 0, false // not a JSON number
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// Package params is the one definition of the params of startHub, startEdge
// and updateAllowedEdges: their names, JSON types, whether they are
// required, and the engine config field each one sets. The bridge decodes a
// request's params with it; the standalone config loader checks a YAML
// file's keys against it (with line numbers) and decodes the values through
// the same code, so the two cannot drift.
//
// What a value may be (ports 1-65535, non-empty ids, unique edges...) is the
// engine's to say (tunnel.HubConfig.Validate and friends): a
// *tunnel.ConfigError is rendered in param names by FromConfigError.
package params

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/serve-zone/remoteingress/tunnel"
	"github.com/serve-zone/remoteingress/tunnel/firewall"
)

// Error is a param that is missing, of the wrong type or refused by the
// engine. Param is its path in param names ("listenPorts[1]",
// "edges[0].secret"); Msg follows it ("must be an integer"); Ref, if not
// empty, is another param Msg refers to, named after it.
type Error struct {
	Param string
	Msg   string
	Ref   string
}

// Error implements error: "Param Msg" or "Param Msg Ref".
func (e *Error) Error() string {
	if e.Ref == "" {
		return e.Param + " " + e.Msg
	}
	return e.Param + " " + e.Msg + " " + e.Ref
}

// Object is the params of one call: JSON values by name. An absent member
// and a null one are the same.
type Object map[string]json.RawMessage

// ErrNotObject is returned by Parse for params that are not a JSON object.
var ErrNotObject = errors.New("params must be a JSON object")

// Parse decodes raw, which must be absent (nil), null or a JSON object.
func Parse(raw *json.RawMessage) (Object, error) {
	if raw == nil || isNull(*raw) {
		return Object{}, nil
	}
	var obj Object
	if err := json.Unmarshal(*raw, &obj); err != nil || obj == nil {
		return nil, ErrNotObject
	}
	return obj, nil
}

// value returns the member's raw value; ok is false when it is absent or null.
func (o Object) value(name string) (json.RawMessage, bool) {
	raw, ok := o[name]
	if !ok || isNull(raw) {
		return nil, false
	}
	return raw, true
}

// Kind is the JSON type of a param, as messages and documentation name it.
type Kind string

// The kinds of params.
const (
	KindString  Kind = "string"
	KindInteger Kind = "integer"
	KindSeconds Kind = "integer (seconds)"
	KindMillis  Kind = "integer (milliseconds)"
	KindBool    Kind = "boolean"
	KindInts    Kind = "array of integers"
	KindStrings Kind = "array of strings"
	KindEdges   Kind = "array of {id, secret}"
)

// Field is one param of a config C: its name, its kind, whether it is
// required, the engine field it sets (the Field of a *tunnel.ConfigError
// about it) and the code that decodes a non-null JSON value into C.
type Field[C any] struct {
	Name     string
	Engine   string
	Kind     Kind
	Required bool
	// Unless names a param whose presence makes a Required one optional
	// (hubHost is not needed beside hubs).
	Unless string
	decode func(raw json.RawMessage, c *C) *Error
}

// Schema is the params of one method, in the order they are decoded.
type Schema[C any] struct {
	Fields []Field[C]
}

// Decode stores the members of obj that the schema knows into c, which
// holds the defaults: absent and null members leave them in place, as does
// an empty optional string. Unknown members are ignored (the caller checks
// for them where they are errors). The error is the first *Error.
func (s Schema[C]) Decode(obj Object, c *C) error {
	for _, f := range s.Fields {
		raw, ok := obj.value(f.Name)
		if !ok {
			if _, other := obj.value(f.Unless); f.Required && (f.Unless == "" || !other) {
				return &Error{Param: f.Name, Msg: "is required"}
			}
			continue
		}
		if err := f.decode(raw, c); err != nil {
			return err
		}
	}
	return nil
}

// Field returns the field named name.
func (s Schema[C]) Field(name string) (Field[C], bool) {
	for _, f := range s.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field[C]{}, false
}

// Names returns the param names in order.
func (s Schema[C]) Names() []string {
	out := make([]string, len(s.Fields))
	for i, f := range s.Fields {
		out[i] = f.Name
	}
	return out
}

// String is a string param. An empty optional string leaves the default
// alone, like an absent one; an empty required string is stored, for the
// engine to refuse.
func String[C any](name, engine string, required bool, dst func(*C) *string) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindString, Required: required,
		decode: func(raw json.RawMessage, c *C) *Error {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return &Error{Param: name, Msg: "must be a string"}
			}
			if s != "" || required {
				*dst(c) = s
			}
			return nil
		}}
}

// Int is an optional integer param.
func Int[C any](name, engine string, dst func(*C) *int) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindInteger,
		decode: func(raw json.RawMessage, c *C) *Error {
			n, ok := IntValue(raw)
			if !ok {
				return &Error{Param: name, Msg: "must be an integer"}
			}
			*dst(c) = n
			return nil
		}}
}

// MaxSeconds is the largest whole number of seconds a param may give.
const MaxSeconds = math.MaxInt32

// Seconds is an optional whole number of seconds, 0 to MaxSeconds; 0 is
// stored as off (a negative duration).
func Seconds[C any](name, engine string, dst func(*C) *time.Duration) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindSeconds,
		decode: func(raw json.RawMessage, c *C) *Error {
			n, ok := IntValue(raw)
			if !ok || n < 0 || n > MaxSeconds {
				return &Error{Param: name, Msg: "must be an integer 0-" + strconv.Itoa(MaxSeconds)}
			}
			d := time.Duration(n) * time.Second
			if n == 0 {
				d = -1
			}
			*dst(c) = d
			return nil
		}}
}

// MaxMillis is the largest number of milliseconds a param may give.
const MaxMillis = math.MaxInt32

// Millis is an optional positive whole number of milliseconds.
func Millis[C any](name, engine string, dst func(*C) *time.Duration) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindMillis,
		decode: func(raw json.RawMessage, c *C) *Error {
			n, ok := IntValue(raw)
			if !ok || n < 1 || n > MaxMillis {
				return &Error{Param: name, Msg: "must be an integer 1-" + strconv.Itoa(MaxMillis)}
			}
			*dst(c) = time.Duration(n) * time.Millisecond
			return nil
		}}
}

// Bool is an optional boolean param; invert stores its negation (a param
// that turns on what the engine field turns off).
func Bool[C any](name, engine string, invert bool, dst func(*C) *bool) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindBool,
		decode: func(raw json.RawMessage, c *C) *Error {
			var b bool
			if err := json.Unmarshal(raw, &b); err != nil {
				return &Error{Param: name, Msg: "must be true or false"}
			}
			*dst(c) = b != invert
			return nil
		}}
}

// Strings is an optional array of strings.
func Strings[C any](name, engine string, dst func(*C) *[]string) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindStrings,
		decode: func(raw json.RawMessage, c *C) *Error {
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				return &Error{Param: name, Msg: "must be an array of strings"}
			}
			out := make([]string, 0, len(items))
			for i, item := range items {
				var s string
				if err := json.Unmarshal(item, &s); err != nil {
					return &Error{Param: indexed(name, i), Msg: "must be a string"}
				}
				out = append(out, s)
			}
			*dst(c) = out
			return nil
		}}
}

// unless makes f optional when the param other is given.
func unless[C any](f Field[C], other string) Field[C] {
	f.Unless = other
	return f
}

// Ints is an array of integers, required or not.
func Ints[C any](name, engine string, required bool, dst func(*C) *[]int) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindInts, Required: required,
		decode: func(raw json.RawMessage, c *C) *Error {
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				return &Error{Param: name, Msg: "must be an array of integers"}
			}
			out := make([]int, 0, len(items))
			for i, item := range items {
				n, ok := IntValue(item)
				if !ok {
					return &Error{Param: indexed(name, i), Msg: "must be an integer"}
				}
				out = append(out, n)
			}
			*dst(c) = out
			return nil
		}}
}

// EdgeEntryFields are the members of one entry of an edge list.
var EdgeEntryFields = []string{"id", "secret", "listenPorts", "listenPortsUdp", "firewall"}

// FirewallFields are the members of an entry's firewall. Any other member
// is an error: a misspelt rule must not pass for no rule.
var FirewallFields = []string{"blockedIps", "allowedIps", "maxConnectionsPerIp", "connectionRatePerIp"}

// Edges is a required array of {id, secret} objects with string ids and
// secrets, each optionally with the ports the hub assigns to that edge
// (listenPorts, listenPortsUdp: either present, even empty, and the hub
// owns both lists; an absent one is then empty) and its firewall. Messages
// name edges by index and id, never by secret.
func Edges[C any](name, engine string, dst func(*C) *[]tunnel.EdgeCredential) Field[C] {
	return Field[C]{Name: name, Engine: engine, Kind: KindEdges, Required: true,
		decode: func(raw json.RawMessage, c *C) *Error {
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				return &Error{Param: name, Msg: "must be an array of {id, secret} objects"}
			}
			edges := make([]tunnel.EdgeCredential, 0, len(items))
			for i, item := range items {
				var entry Object
				if err := json.Unmarshal(item, &entry); err != nil || entry == nil {
					return &Error{Param: indexed(name, i), Msg: "must be an object {id, secret}"}
				}
				id, err := entryString(entry, "id")
				if err != nil {
					err.Param = indexed(name, i) + "." + err.Param
					return err
				}
				e, err := decodeEntry(entry, id)
				if err != nil {
					err.Param = indexed(name, i) + "." + err.Param
					err.Msg += " (edge " + strconv.Quote(id) + ")"
					return err
				}
				edges = append(edges, e)
			}
			*dst(c) = edges
			return nil
		}}
}

// decodeEntry decodes the members of an edge entry but its id.
func decodeEntry(entry Object, id string) (tunnel.EdgeCredential, *Error) {
	e := tunnel.EdgeCredential{ID: id}
	var err *Error
	if e.Secret, err = entryString(entry, "secret"); err != nil {
		return e, err
	}
	tcp, hasTCP, err := portList(entry, "listenPorts")
	if err != nil {
		return e, err
	}
	udp, hasUDP, err := portList(entry, "listenPortsUdp")
	if err != nil {
		return e, err
	}
	if hasTCP || hasUDP {
		e.Ports = &tunnel.PortAssignment{TCP: tcp, UDP: udp}
	}
	if raw, ok := entry.value("firewall"); ok {
		fw, err := decodeFirewall(raw)
		if err != nil {
			err.Param = "firewall" + err.Param
			return e, err
		}
		e.Firewall = &fw
	}
	return e, nil
}

// portList reads an optional array of integers of an edge entry.
func portList(entry Object, name string) ([]int, bool, *Error) {
	raw, ok := entry.value(name)
	if !ok {
		return nil, false, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, true, &Error{Param: name, Msg: "must be an array of integers"}
	}
	out := make([]int, 0, len(items))
	for i, item := range items {
		n, ok := IntValue(item)
		if !ok {
			return nil, true, &Error{Param: indexed(name, i), Msg: "must be an integer"}
		}
		out = append(out, n)
	}
	return out, true, nil
}

// decodeFirewall decodes an entry's firewall object; Param of the error is
// the path below it (".blockedIps[2]").
func decodeFirewall(raw json.RawMessage) (firewall.Rules, *Error) {
	var obj Object
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return firewall.Rules{}, &Error{Msg: "must be an object {blockedIps, allowedIps, maxConnectionsPerIp, connectionRatePerIp}"}
	}
	for k := range obj {
		if !slices.Contains(FirewallFields, k) {
			return firewall.Rules{}, &Error{Param: "." + k, Msg: "is not a firewall rule (known: " + strings.Join(FirewallFields, ", ") + ")"}
		}
	}
	var r firewall.Rules
	strs := func(name string, dst *[]string) *Error {
		raw, ok := obj.value(name)
		if !ok {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return &Error{Param: "." + name, Msg: "must be an array of strings (IPs or CIDRs)"}
		}
		return nil
	}
	num := func(name string, dst *int) *Error {
		raw, ok := obj.value(name)
		if !ok {
			return nil
		}
		n, ok := IntValue(raw)
		if !ok {
			return &Error{Param: "." + name, Msg: "must be an integer"}
		}
		*dst = n
		return nil
	}
	if err := strs("blockedIps", &r.BlockedIPs); err != nil {
		return r, err
	}
	if err := strs("allowedIps", &r.AllowedIPs); err != nil {
		return r, err
	}
	if err := num("maxConnectionsPerIp", &r.MaxConnectionsPerIP); err != nil {
		return r, err
	}
	if err := num("connectionRatePerIp", &r.ConnectionRatePerIP); err != nil {
		return r, err
	}
	return r, nil
}

// entryString reads a required string member of an edge entry.
func entryString(entry Object, name string) (string, *Error) {
	raw, ok := entry.value(name)
	if !ok {
		return "", &Error{Param: name, Msg: "is required"}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", &Error{Param: name, Msg: "must be a string"}
	}
	return s, nil
}

// AllowedEdges is the config of updateAllowedEdges.
type AllowedEdges struct {
	Edges []tunnel.EdgeCredential
}

// StartHub is the params of startHub.
var StartHub = Schema[tunnel.HubConfig]{Fields: []Field[tunnel.HubConfig]{
	Int("tunnelPort", "TunnelPort", func(c *tunnel.HubConfig) *int { return &c.TunnelPort }),
	String("targetHost", "TargetHost", false, func(c *tunnel.HubConfig) *string { return &c.TargetHost }),
	String("listenHost", "ListenHost", false, func(c *tunnel.HubConfig) *string { return &c.ListenHost }),
	String("tlsCertPem", "TLSCertPEM", false, func(c *tunnel.HubConfig) *string { return &c.TLSCertPEM }),
	String("tlsKeyPem", "TLSKeyPEM", false, func(c *tunnel.HubConfig) *string { return &c.TLSKeyPEM }),
	String("metricsListen", "MetricsListen", false, func(c *tunnel.HubConfig) *string { return &c.MetricsListen }),
	String("proxyProtocol", "ProxyProtocol", false, func(c *tunnel.HubConfig) *string { return &c.ProxyProtocol }),
	String("udpProxyProtocol", "UDPProxyProtocol", false, func(c *tunnel.HubConfig) *string { return &c.UDPProxyProtocol }),
	Seconds("udpIdleTimeoutSecs", "UDPIdleTimeout", func(c *tunnel.HubConfig) *time.Duration { return &c.UDPIdleTimeout }),
	Int("maxUdpFlows", "MaxUDPFlows", func(c *tunnel.HubConfig) *int { return &c.MaxUDPFlows }),
	Bool("quic", "DisableQUIC", true, func(c *tunnel.HubConfig) *bool { return &c.DisableQUIC }),
}}

// UpdateAllowedEdges is the params of updateAllowedEdges.
var UpdateAllowedEdges = Schema[AllowedEdges]{Fields: []Field[AllowedEdges]{
	Edges("edges", "Edges", func(c *AllowedEdges) *[]tunnel.EdgeCredential { return &c.Edges }),
}}

// StartEdge is the params of startEdge.
var StartEdge = Schema[tunnel.EdgeConfig]{Fields: []Field[tunnel.EdgeConfig]{
	unless(String("hubHost", "HubHost", true, func(c *tunnel.EdgeConfig) *string { return &c.HubHost }), "hubs"),
	Strings("hubs", "Hubs", func(c *tunnel.EdgeConfig) *[]string { return &c.Hubs }),
	String("hubMode", "HubMode", false, func(c *tunnel.EdgeConfig) *string { return &c.HubMode }),
	Int("hubPort", "HubPort", func(c *tunnel.EdgeConfig) *int { return &c.HubPort }),
	String("edgeId", "EdgeID", true, func(c *tunnel.EdgeConfig) *string { return &c.EdgeID }),
	String("secret", "Secret", true, func(c *tunnel.EdgeConfig) *string { return &c.Secret }),
	Ints("listenPorts", "ListenPorts", false, func(c *tunnel.EdgeConfig) *[]int { return &c.ListenPorts }),
	Ints("listenPortsUdp", "ListenPortsUDP", false, func(c *tunnel.EdgeConfig) *[]int { return &c.ListenPortsUDP }),
	String("listenHost", "ListenHost", false, func(c *tunnel.EdgeConfig) *string { return &c.ListenHost }),
	Seconds("stunIntervalSecs", "StunInterval", func(c *tunnel.EdgeConfig) *time.Duration { return &c.StunInterval }),
	String("stunServer", "StunServer", false, func(c *tunnel.EdgeConfig) *string { return &c.StunServer }),
	String("hubCertSha256", "HubCertSHA256", false, func(c *tunnel.EdgeConfig) *string { return &c.HubCertSHA256 }),
	String("hubCa", "HubCAPEM", false, func(c *tunnel.EdgeConfig) *string { return &c.HubCAPEM }),
	String("hubServerName", "HubServerName", false, func(c *tunnel.EdgeConfig) *string { return &c.HubServerName }),
	Int("tunnelConnections", "Connections", func(c *tunnel.EdgeConfig) *int { return &c.Connections }),
	String("metricsListen", "MetricsListen", false, func(c *tunnel.EdgeConfig) *string { return &c.MetricsListen }),
	String("firewallBackend", "FirewallBackend", false, func(c *tunnel.EdgeConfig) *string { return &c.FirewallBackend }),
	Seconds("udpIdleTimeoutSecs", "UDPIdleTimeout", func(c *tunnel.EdgeConfig) *time.Duration { return &c.UDPIdleTimeout }),
	Int("maxUdpFlows", "MaxUDPFlows", func(c *tunnel.EdgeConfig) *int { return &c.MaxUDPFlows }),
	String("transport", "Transport", false, func(c *tunnel.EdgeConfig) *string { return &c.Transport }),
	Millis("quicFallbackMs", "QUICFallback", func(c *tunnel.EdgeConfig) *time.Duration { return &c.QUICFallback }),
}}

// engineNames maps the engine's config field names to the params they come
// from: the fields of the schemas, and the members of an edge entry.
var engineNames = func() map[string]string {
	m := map[string]string{"ID": "id", "Secret": "secret", "Firewall": "firewall"}
	add := func(engine, name string) { m[engine] = name }
	for _, f := range StartHub.Fields {
		add(f.Engine, f.Name)
	}
	for _, f := range UpdateAllowedEdges.Fields {
		add(f.Engine, f.Name)
	}
	for _, f := range StartEdge.Fields {
		add(f.Engine, f.Name)
	}
	return m
}()

// EngineNames returns the engine field names that have a param, for tests
// that check them against the engine's config types.
func EngineNames() []string {
	out := make([]string, 0, len(engineNames))
	for k := range engineNames {
		out = append(out, k)
	}
	return out
}

// Path renders an engine field path ("Edges[1].Secret") with param names
// ("edges[1].secret"); names without a param are kept.
func Path(field string) string {
	if field == "" {
		return ""
	}
	parts := strings.Split(field, ".")
	for i, part := range parts {
		name, index, _ := strings.Cut(part, "[")
		if param, ok := engineNames[name]; ok {
			name = param
		}
		if index != "" {
			name += "[" + index
		}
		parts[i] = name
	}
	return strings.Join(parts, ".")
}

// FromConfigError renders a *tunnel.ConfigError in err's chain in param
// names; ok is false when err holds none.
func FromConfigError(err error) (*Error, bool) {
	var ce *tunnel.ConfigError
	if err == nil || !errors.As(err, &ce) {
		return nil, false
	}
	return &Error{Param: Path(ce.Field), Msg: ce.Msg, Ref: Path(ce.Ref)}, true
}

// indexed names element i of the list param name.
func indexed(name string, i int) string { return name + "[" + strconv.Itoa(i) + "]" }

// IntValue parses a JSON number that is an integer (80 and 80.0, not 80.5).
// Integers beyond ±2^53 are clamped there: out of every range the engine
// accepts, and exact in a float64.
func IntValue(raw json.RawMessage) (int, bool) {
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

// isNull reports whether raw is absent or the JSON literal null.
func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

package standalone

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/serve-zone/remoteingress/internal/params"
	"github.com/serve-zone/remoteingress/internal/token"
	"github.com/serve-zone/remoteingress/tunnel"
)

// A config file is YAML (so JSON too): a mapping whose keys are the params
// of startHub or startEdge (package params, the bridge's own definition),
// plus the keys of standalone operation below. Loading decodes it to a
// yaml.Node, checks every key against those schemas (an unknown key is an
// error naming it and its line), turns the values into JSON and decodes
// them through the same params code the bridge runs on a request; the
// engine's Validate has the last word, its errors named by param and line.

// Environment variables that give an edge its secret or token.
const (
	EnvSecret = "REMOTEINGRESS_SECRET"
	EnvToken  = "REMOTEINGRESS_TOKEN"
)

// DefaultGracePeriod is how long a standalone process lets open streams
// finish when it is told to stop.
const DefaultGracePeriod = 10 * time.Second

// Common is what both kinds of file set beside the engine's params.
type Common struct {
	// GracePeriod bounds the drain at SIGTERM/SIGINT (gracePeriodSecs).
	GracePeriod time.Duration
	// LogFormat is "text" or "json"; LogLevel "debug", "info", "warn" or "error".
	LogFormat, LogLevel string
}

// HubFile is a loaded hub config.
type HubFile struct {
	Path string
	Hub  tunnel.HubConfig
	// Allowed is the allowed list, from allowedEdges or allowedEdgesFile.
	Allowed []tunnel.EdgeCredential
	// AllowedEdgesFile is the absolute path of allowedEdgesFile, or "".
	AllowedEdgesFile string
	Common
}

// EdgeFile is a loaded edge config.
type EdgeFile struct {
	Path string // "" when there is no config file (a token gives everything)
	Edge tunnel.EdgeConfig
	Common
}

// extra holds the keys of standalone operation, decoded by params like
// the engine's.
type extra struct {
	GracePeriodSecs  int
	LogFormat        string
	LogLevel         string
	AllowedEdgesFile string
	TLSCertFile      string
	TLSKeyFile       string
	SecretFile       string
	TokenFile        string
	AllowedEdges     []tunnel.EdgeCredential
}

func xInt(name string, dst func(*extra) *int) params.Field[extra] {
	return params.Int(name, "", dst)
}

func xString(name string, dst func(*extra) *string) params.Field[extra] {
	return params.String(name, "", false, dst)
}

var commonFields = []params.Field[extra]{
	xInt("gracePeriodSecs", func(x *extra) *int { return &x.GracePeriodSecs }),
	xString("logFormat", func(x *extra) *string { return &x.LogFormat }),
	xString("logLevel", func(x *extra) *string { return &x.LogLevel }),
}

// hubExtra is the standalone keys of a hub file. allowedEdges decodes
// entries whose secretFile has been read already (see resolveEntries).
var hubExtra = params.Schema[extra]{Fields: append(slices.Clone(commonFields),
	optional(params.Edges("allowedEdges", "", func(x *extra) *[]tunnel.EdgeCredential { return &x.AllowedEdges })),
	xString("allowedEdgesFile", func(x *extra) *string { return &x.AllowedEdgesFile }),
	xString("tlsCertFile", func(x *extra) *string { return &x.TLSCertFile }),
	xString("tlsKeyFile", func(x *extra) *string { return &x.TLSKeyFile }),
)}

// edgeExtra is the standalone keys of an edge file.
var edgeExtra = params.Schema[extra]{Fields: append(slices.Clone(commonFields),
	xString("secretFile", func(x *extra) *string { return &x.SecretFile }),
	xString("tokenFile", func(x *extra) *string { return &x.TokenFile }),
)}

// optional makes a field optional.
func optional[C any](f params.Field[C]) params.Field[C] {
	f.Required = false
	return f
}

// Keys of an allowed-list entry in a file: those of updateAllowedEdges
// entries, and secretFile.
var entryKeys = append(slices.Clone(params.EdgeEntryFields), "secretFile")

// keySet is the keys a file of one kind may have.
func keySet(names ...[]string) map[string]bool {
	m := map[string]bool{}
	for _, ns := range names {
		for _, n := range ns {
			m[n] = true
		}
	}
	return m
}

var (
	hubKeys  = keySet(params.StartHub.Names(), hubExtra.Names())
	edgeKeys = keySet(params.StartEdge.Names(), edgeExtra.Names())
)

// Keys lists, sorted, the keys a file of kind may hold; for
// KindAllowedEdges, the keys of one entry.
func Keys(kind Kind) []string {
	switch kind {
	case KindHub:
		return keysOf(hubKeys)
	case KindEdge:
		return keysOf(edgeKeys)
	case KindAllowedEdges:
		return keysOf(keySet(entryKeys))
	}
	return nil
}

// Error is a problem with a config file: File and Line (1-based, 0 when
// unknown) say where, Key names the key ("listenPorts[1]"). It never holds a
// secret.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

// Error implements error: "file:line: key msg".
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + " ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// yamlLine picks the line out of a YAML syntax error.
var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// doc is a parsed YAML file.
type doc struct {
	path string
	root *yaml.Node // a mapping, or nil for an empty file
}

// errAt returns an *Error at the node of key path (params path syntax).
func (d *doc) errAt(key, msg string) *Error {
	return &Error{File: d.path, Line: d.lineOf(key), Key: key, Msg: msg}
}

// paramErr places a params error (whose Param is a key path of this file).
func (d *doc) paramErr(err error) error {
	var pe *params.Error
	if errors.As(err, &pe) {
		msg := pe.Msg
		if pe.Ref != "" {
			msg += " " + pe.Ref
		}
		return d.errAt(pe.Param, msg)
	}
	return err
}

// readDoc parses a YAML file whose top level must be a mapping.
func readDoc(path string) (*doc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseDoc(path, b)
}

func parseDoc(path string, b []byte) (*doc, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		return nil, &Error{File: path, Line: line, Msg: "is not valid YAML: " + msg}
	}
	d := &doc{path: path}
	if n.Kind == 0 || len(n.Content) == 0 {
		return d, nil
	}
	root := n.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return d, nil
	}
	d.root = root
	return d, nil
}

// mapping returns the key/value pairs of a mapping node, refusing other
// nodes, non-string keys and duplicates.
func (d *doc) mapping(n *yaml.Node, where string) ([][2]*yaml.Node, error) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil, &Error{File: d.path, Line: n.Line, Key: where, Msg: "must be a mapping of keys to values"}
	}
	var out [][2]*yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			return nil, &Error{File: d.path, Line: k.Line, Key: where, Msg: "has a key that is not a plain name"}
		}
		if first, dup := seen[k.Value]; dup {
			return nil, &Error{File: d.path, Line: k.Line, Key: join(where, k.Value), Msg: "is given twice (first on line " + strconv.Itoa(first) + ")"}
		}
		seen[k.Value] = k.Line
		out = append(out, [2]*yaml.Node{k, v})
	}
	return out, nil
}

func join(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}

// toJSON renders a YAML value as JSON, the bridge's input.
func (d *doc) toJSON(key string, n *yaml.Node) (json.RawMessage, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, &Error{File: d.path, Line: n.Line, Key: key, Msg: "cannot be read: " + err.Error()}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &Error{File: d.path, Line: n.Line, Key: key, Msg: "has a value that has no JSON equivalent (a mapping with keys that are not strings?)"}
	}
	return b, nil
}

// aliases are the keys a value can come from when its own key is absent:
// a secret read from secretFile, identity from a token.
var aliases = map[string][]string{
	"secret":  {"secretFile", "tokenFile"},
	"hubHost": {"tokenFile"},
	"hubPort": {"tokenFile"},
	"edgeId":  {"tokenFile"},
}

// lineOf finds the line of a key path ("allowedEdges[1].id") in the file:
// that of the deepest part found.
func (d *doc) lineOf(path string) int {
	n := d.root
	line := 0
	if n != nil {
		line = n.Line
	}
	for _, part := range strings.Split(path, ".") {
		if n == nil {
			break
		}
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			var next *yaml.Node
			for _, k := range append([]string{name}, aliases[name]...) {
				if kn, vn := lookup(n, k); kn != nil {
					line, next = kn.Line, vn
					break
				}
			}
			n = next
		}
		for rest != "" && n != nil {
			idx, after, _ := strings.Cut(rest, "]")
			rest = strings.TrimPrefix(after, "[")
			i, err := strconv.Atoi(idx)
			for n.Kind == yaml.AliasNode {
				n = n.Alias
			}
			if err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				n = nil
				break
			}
			n = n.Content[i]
			line = n.Line
		}
	}
	return line
}

// lookup finds key in a mapping node.
func lookup(n *yaml.Node, key string) (k, v *yaml.Node) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

// Kind is what a config file configures.
type Kind string

// The kinds of config file.
const (
	KindHub  Kind = "hub"
	KindEdge Kind = "edge"
	// KindAllowedEdges is an allowedEdgesFile: a sequence of entries.
	KindAllowedEdges Kind = "allowed edges"
)

// Detect tells a hub file from an edge file by its keys: keys only a hub
// has (tunnelPort, targetHost, allowedEdges...) or only an edge has
// (hubHost, edgeId, listenPorts, tokenFile...). A file that is a sequence
// is an allowedEdgesFile.
func Detect(path string) (Kind, error) {
	d, err := readDoc(path)
	if err != nil {
		return "", err
	}
	if d.root != nil && d.root.Kind == yaml.SequenceNode {
		return KindAllowedEdges, nil
	}
	pairs, err := d.topLevel()
	if err != nil {
		return "", err
	}
	var hubKey, edgeKey *yaml.Node
	for _, p := range pairs {
		k := p[0]
		switch {
		case hubKeys[k.Value] && !edgeKeys[k.Value]:
			hubKey = cmpFirst(hubKey, k)
		case edgeKeys[k.Value] && !hubKeys[k.Value]:
			edgeKey = cmpFirst(edgeKey, k)
		case !hubKeys[k.Value] && !edgeKeys[k.Value]:
			return "", d.unknownKey(k, keySet(keysOf(hubKeys), keysOf(edgeKeys)))
		}
	}
	switch {
	case hubKey != nil && edgeKey != nil:
		return "", &Error{File: path, Line: edgeKey.Line, Key: edgeKey.Value,
			Msg: fmt.Sprintf("is an edge key, but %s on line %d is a hub key: a file configures a hub or an edge", hubKey.Value, hubKey.Line)}
	case hubKey != nil:
		return KindHub, nil
	case edgeKey != nil:
		return KindEdge, nil
	}
	return "", &Error{File: path, Msg: "cannot tell a hub file from an edge file: it has none of the keys of either (hub: tunnelPort, targetHost, allowedEdges...; edge: hubHost, edgeId, listenPorts, tokenFile...)"}
}

func cmpFirst(a, b *yaml.Node) *yaml.Node {
	if a == nil {
		return b
	}
	return a
}

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// topLevel returns the pairs of the file's mapping (none for an empty file).
func (d *doc) topLevel() ([][2]*yaml.Node, error) {
	if d.root == nil {
		return nil, nil
	}
	return d.mapping(d.root, "")
}

// unknownKey is the error of a key no schema has, with a suggestion when
// only its case is wrong.
func (d *doc) unknownKey(k *yaml.Node, known map[string]bool) error {
	msg := "is not a known key"
	if k.Value == params.TokenParam && known["tokenFile"] {
		// startEdge's token param holds a secret: a file gives it by name.
		return &Error{File: d.path, Line: k.Line, Key: k.Value, Msg: msg + " (a token holds a secret: give it in tokenFile, --token-file or " + EnvToken + ")"}
	}
	for name := range known {
		if strings.EqualFold(name, k.Value) {
			msg += " (did you mean " + name + "?)"
			break
		}
	}
	return &Error{File: d.path, Line: k.Line, Key: k.Value, Msg: msg}
}

// collect checks the file's keys against known and returns their values as
// JSON params.
func (d *doc) collect(known map[string]bool, skip ...string) (params.Object, error) {
	pairs, err := d.topLevel()
	if err != nil {
		return nil, err
	}
	obj := params.Object{}
	for _, p := range pairs {
		k, v := p[0], p[1]
		if !known[k.Value] {
			return nil, d.unknownKey(k, known)
		}
		if slices.Contains(skip, k.Value) {
			continue
		}
		raw, err := d.toJSON(k.Value, v)
		if err != nil {
			return nil, err
		}
		obj[k.Value] = raw
	}
	return obj, nil
}

// has reports whether the file gives key a non-null value.
func has(obj params.Object, key string) bool {
	raw, ok := obj[key]
	return ok && string(raw) != "null"
}

// resolve makes a path from a file relative to that file's directory.
func resolve(base, p string) string {
	if p == "" || filepath.IsAbs(p) || base == "" {
		return p
	}
	return filepath.Join(filepath.Dir(base), p)
}

// readSecret reads a secret (or token) file: surrounding white space,
// such as the newline `echo` writes, is dropped.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot be read: %v", unwrapPath(err))
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("names an empty file (%s)", path)
	}
	return s, nil
}

// unwrapPath keeps the path and the reason of a file error.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %v", pe.Path, pe.Err)
	}
	return err
}

// decodeCommon checks and stores the keys both kinds share.
func (d *doc) decodeCommon(x extra, obj params.Object) (Common, error) {
	c := Common{GracePeriod: DefaultGracePeriod, LogFormat: "text", LogLevel: "info"}
	if has(obj, "gracePeriodSecs") {
		if x.GracePeriodSecs < 0 || x.GracePeriodSecs > params.MaxSeconds {
			return c, d.errAt("gracePeriodSecs", "must be an integer 0-"+strconv.Itoa(params.MaxSeconds))
		}
		c.GracePeriod = time.Duration(x.GracePeriodSecs) * time.Second
	}
	if x.LogFormat != "" {
		if x.LogFormat != "text" && x.LogFormat != "json" {
			return c, d.errAt("logFormat", `must be "text" or "json"`)
		}
		c.LogFormat = x.LogFormat
	}
	if x.LogLevel != "" {
		if _, ok := parseLevel(x.LogLevel); !ok {
			return c, d.errAt("logLevel", `must be "debug", "info", "warn" or "error"`)
		}
		c.LogLevel = x.LogLevel
	}
	return c, nil
}

// LoadHub reads and validates a hub config file, the allowed list included
// (from allowedEdges, or the file allowedEdgesFile names). It binds nothing.
func LoadHub(path string) (*HubFile, error) {
	d, err := readDoc(path)
	if err != nil {
		return nil, err
	}
	obj, err := d.collect(hubKeys, "allowedEdges")
	if err != nil {
		return nil, err
	}
	if _, v := lookupRoot(d, "allowedEdges"); v != nil {
		raw, err := d.resolveEntries("allowedEdges", v)
		if err != nil {
			return nil, err
		}
		obj["allowedEdges"] = raw
	}
	f := &HubFile{Path: path, Hub: tunnel.DefaultHubConfig()}
	if err := params.StartHub.Decode(obj, &f.Hub); err != nil {
		return nil, d.paramErr(err)
	}
	var x extra
	if err := hubExtra.Decode(obj, &x); err != nil {
		return nil, d.paramErr(err)
	}
	if f.Common, err = d.decodeCommon(x, obj); err != nil {
		return nil, err
	}
	if err := d.pemFile(obj, "tlsCertFile", x.TLSCertFile, "tlsCertPem", &f.Hub.TLSCertPEM); err != nil {
		return nil, err
	}
	if err := d.pemFile(obj, "tlsKeyFile", x.TLSKeyFile, "tlsKeyPem", &f.Hub.TLSKeyPEM); err != nil {
		return nil, err
	}
	if err := f.Hub.Validate(); err != nil {
		return nil, d.configErr(err, "")
	}
	if f.Hub.TLSCertPEM != "" {
		if _, err := tls.X509KeyPair([]byte(f.Hub.TLSCertPEM), []byte(f.Hub.TLSKeyPEM)); err != nil {
			return nil, d.errAt(firstGiven(obj, "tlsCertFile", "tlsCertPem"), "is not a valid certificate and key: "+err.Error())
		}
	}
	switch {
	case has(obj, "allowedEdges") && x.AllowedEdgesFile != "":
		return nil, d.errAt("allowedEdgesFile", "cannot be given with allowedEdges: give the list in one place")
	case x.AllowedEdgesFile != "":
		f.AllowedEdgesFile, err = filepath.Abs(resolve(path, x.AllowedEdgesFile))
		if err != nil {
			return nil, d.errAt("allowedEdgesFile", err.Error())
		}
		if f.Allowed, err = LoadAllowedEdges(f.AllowedEdgesFile); err != nil {
			return nil, err
		}
	default:
		f.Allowed = x.AllowedEdges
		if err := tunnel.ValidateEdgeList(f.Allowed); err != nil {
			return nil, d.configErr(err, "allowedEdges")
		}
	}
	return f, nil
}

// firstGiven returns the first of keys the file gives.
func firstGiven(obj params.Object, keys ...string) string {
	for _, k := range keys {
		if has(obj, k) {
			return k
		}
	}
	return keys[0]
}

// pemFile reads a PEM file key into dst, refusing it beside the inline key.
func (d *doc) pemFile(obj params.Object, key, path, inline string, dst *string) error {
	if path == "" {
		return nil
	}
	if has(obj, inline) {
		return d.errAt(key, "cannot be given with "+inline)
	}
	b, err := os.ReadFile(resolve(d.path, path))
	if err != nil {
		return d.errAt(key, "cannot be read: "+unwrapPath(err).Error())
	}
	*dst = string(b)
	return nil
}

// configErr places an engine *tunnel.ConfigError; list renames the edge
// list ("edges" in the params) to its key in this file ("allowedEdges", or
// "" for a file that is the list itself).
func (d *doc) configErr(err error, list string) error {
	pe, ok := params.FromConfigError(err)
	if !ok {
		return err
	}
	rename := func(p string) string {
		if rest, ok := strings.CutPrefix(p, "edges"); ok {
			return list + rest
		}
		return p
	}
	pe.Param, pe.Ref = rename(pe.Param), rename(pe.Ref)
	return d.paramErr(pe)
}

func lookupRoot(d *doc, key string) (k, v *yaml.Node) {
	if d.root == nil {
		return nil, nil
	}
	return lookup(d.root, key)
}

// resolveEntries checks an allowed list's entries ({id, secret} or {id,
// secretFile}) and returns the list as the JSON of updateAllowedEdges, each
// secretFile read (relative to this file).
func (d *doc) resolveEntries(key string, n *yaml.Node) (json.RawMessage, error) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return json.RawMessage("[]"), nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, &Error{File: d.path, Line: n.Line, Key: key, Msg: "must be a list of {id, secret} or {id, secretFile} entries"}
	}
	known := keySet(entryKeys)
	entries := make([]params.Object, 0, len(n.Content))
	for i, item := range n.Content {
		where := key + "[" + strconv.Itoa(i) + "]"
		pairs, err := d.mapping(item, where)
		if err != nil {
			return nil, err
		}
		entry := params.Object{}
		for _, p := range pairs {
			if !known[p[0].Value] {
				return nil, d.unknownKey(p[0], known)
			}
			raw, err := d.toJSON(where+"."+p[0].Value, p[1])
			if err != nil {
				return nil, err
			}
			entry[p[0].Value] = raw
		}
		if has(entry, "secretFile") {
			if has(entry, "secret") {
				return nil, &Error{File: d.path, Line: item.Line, Key: where + ".secretFile", Msg: "cannot be given with secret"}
			}
			var file string
			if err := json.Unmarshal(entry["secretFile"], &file); err != nil {
				return nil, d.errAt(where+".secretFile", "must be a string")
			}
			secret, err := readSecret(resolve(d.path, file))
			if err != nil {
				return nil, d.errAt(where+".secretFile", err.Error())
			}
			entry["secret"], _ = json.Marshal(secret)
			delete(entry, "secretFile")
		}
		entries = append(entries, entry)
	}
	return json.Marshal(entries)
}

// LoadAllowedEdges reads an allowedEdgesFile: a YAML (or JSON) sequence of
// {id, secret} or {id, secretFile} entries, validated as updateAllowedEdges
// validates its list. An empty file is an error (it is more likely a file
// caught half-written than a wish to refuse every edge: write [] for that).
func LoadAllowedEdges(path string) ([]tunnel.EdgeCredential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot be read: " + unwrapPath(err).Error()}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, &Error{File: path, Msg: "is empty (to allow no edge at all, write [])"}
	}
	d, err := parseDoc(path, b)
	if err != nil {
		return nil, err
	}
	if d.root == nil {
		return nil, &Error{File: path, Msg: "holds no list (to allow no edge at all, write [])"}
	}
	raw, err := d.resolveEntries("", d.root)
	if err != nil {
		return nil, err
	}
	obj := params.Object{"edges": raw}
	var list params.AllowedEdges
	if err := params.UpdateAllowedEdges.Decode(obj, &list); err != nil {
		var pe *params.Error
		if errors.As(err, &pe) {
			pe.Param = strings.TrimPrefix(pe.Param, "edges")
		}
		return nil, d.paramErr(err)
	}
	if err := tunnel.ValidateEdgeList(list.Edges); err != nil {
		return nil, d.configErr(err, "")
	}
	return list.Edges, nil
}

// EdgeSources are where an edge's identity can come from beside its file.
type EdgeSources struct {
	// TokenFile is --token-file (it takes the place of tokenFile).
	TokenFile string
	// ListenPorts is --listen-ports (it takes the place of listenPorts).
	ListenPorts []int
	// Getenv reads REMOTEINGRESS_SECRET and REMOTEINGRESS_TOKEN (default os.Getenv).
	Getenv func(string) string
}

// identityKeys are what a token gives (and secretFile); they cannot be
// given beside one.
var identityKeys = append(slices.Clone(params.TokenKeys), "secretFile")

// LoadEdge reads and validates an edge config file (path may be "" when
// the token and the sources give everything). It binds nothing.
func LoadEdge(path string, src EdgeSources) (*EdgeFile, error) {
	if src.Getenv == nil {
		src.Getenv = os.Getenv
	}
	d := &doc{path: path}
	if path != "" {
		var err error
		if d, err = readDoc(path); err != nil {
			return nil, err
		}
	}
	obj, err := d.collect(edgeKeys)
	if err != nil {
		return nil, err
	}
	var x extra
	if err := edgeExtra.Decode(obj, &x); err != nil {
		return nil, d.paramErr(err)
	}
	f := &EdgeFile{Path: path, Edge: tunnel.DefaultEdgeConfig()}
	if f.Common, err = d.decodeCommon(x, obj); err != nil {
		return nil, err
	}
	if src.ListenPorts != nil {
		obj["listenPorts"], _ = json.Marshal(src.ListenPorts)
	}
	// origin says where a value that is not in the file came from.
	origin := map[string]string{}

	// The token: --token-file, tokenFile, or REMOTEINGRESS_TOKEN when the
	// file gives no identity of its own.
	var tokenText, tokenFrom string
	givesIdentity := slices.ContainsFunc(identityKeys, func(k string) bool { return has(obj, k) })
	switch {
	case src.TokenFile != "":
		tokenFrom = "--token-file " + src.TokenFile
		if tokenText, err = readSecret(src.TokenFile); err != nil {
			return nil, &Error{Key: "--token-file", Msg: err.Error()}
		}
	case x.TokenFile != "":
		tokenFrom = "tokenFile"
		if tokenText, err = readSecret(resolve(path, x.TokenFile)); err != nil {
			return nil, d.errAt("tokenFile", err.Error())
		}
	case !givesIdentity && src.Getenv(EnvToken) != "":
		tokenFrom, tokenText = EnvToken, src.Getenv(EnvToken)
	}
	if tokenFrom != "" {
		if pe := params.TokenConflict(obj, identityKeys, "a token ("+tokenFrom+")"); pe != nil {
			return nil, d.paramErr(pe)
		}
		tok, err := token.Decode(tokenText)
		if err != nil {
			return nil, d.placeSource(tokenFrom, err.Error())
		}
		// The same code as the bridge's token param (params.ExpandToken).
		if pe := params.ApplyToken(obj, tok, tokenFrom); pe != nil {
			return nil, d.paramErr(pe)
		}
		for _, k := range params.TokenKeys {
			origin[k] = tokenFrom
		}
	} else {
		switch {
		case has(obj, "secretFile") && has(obj, "secret"):
			return nil, d.errAt("secretFile", "cannot be given with secret")
		case x.SecretFile != "":
			secret, err := readSecret(resolve(path, x.SecretFile))
			if err != nil {
				return nil, d.errAt("secretFile", err.Error())
			}
			obj["secret"], _ = json.Marshal(secret)
			origin["secret"] = "secretFile"
		case !has(obj, "secret") && src.Getenv(EnvSecret) != "":
			obj["secret"], _ = json.Marshal(src.Getenv(EnvSecret))
			origin["secret"] = EnvSecret
		case !has(obj, "secret"):
			return nil, &Error{File: path, Key: "secret", Msg: "is not given: set secretFile, tokenFile (or --token-file), or the environment variable " + EnvSecret + " or " + EnvToken}
		}
	}
	delete(obj, "secretFile")
	delete(obj, "tokenFile")

	if err := params.StartEdge.Decode(obj, &f.Edge); err != nil {
		return nil, d.withOrigin(err, origin, src)
	}
	if err := f.Edge.Validate(); err != nil {
		pe, ok := params.FromConfigError(err)
		if !ok {
			return nil, err
		}
		return nil, d.withOrigin(pe, origin, src)
	}
	return f, nil
}

// withOrigin places a params error, saying where a value not written in
// the file came from.
func (d *doc) withOrigin(err error, origin map[string]string, src EdgeSources) error {
	var pe *params.Error
	if !errors.As(err, &pe) {
		return err
	}
	root, _, _ := strings.Cut(pe.Param, "[")
	if from, ok := origin[root]; ok {
		pe.Msg += " (from " + from + ")"
	} else if root == "listenPorts" && src.ListenPorts != nil {
		pe.Msg += " (from --listen-ports)"
	} else if root == "listenPorts" && pe.Msg == "is required" {
		pe.Msg += " (in the config file or --listen-ports)"
	}
	return d.paramErr(pe)
}

// placeSource is an error about a token, placed at its source.
func (d *doc) placeSource(from, msg string) error {
	if from == "tokenFile" {
		return d.errAt("tokenFile", msg)
	}
	return &Error{Key: strings.Fields(from)[0], Msg: msg}
}

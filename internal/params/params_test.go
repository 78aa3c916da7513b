package params

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/serve-zone/remoteingress/tunnel"
)

func TestPath(t *testing.T) {
	for field, want := range map[string]string{
		"HubHost":         "hubHost",
		"ListenPorts[2]":  "listenPorts[2]",
		"Edges[1].Secret": "edges[1].secret",
		"Edges[0].ID":     "edges[0].id",
		"StunInterval":    "stunIntervalSecs",
		"Connections":     "tunnelConnections",
		"DialTimeout":     "DialTimeout", // no param: the engine's name
	} {
		if got := Path(field); got != want {
			t.Errorf("Path(%q) = %q, want %q", field, got, want)
		}
	}
}

// Every engine name a schema maps is a field of the engine's configs, so a
// renamed field shows here rather than as a Go name in a user's message.
func TestEngineNamesAreConfigFields(t *testing.T) {
	types := []reflect.Type{reflect.TypeFor[tunnel.HubConfig](), reflect.TypeFor[tunnel.EdgeConfig](), reflect.TypeFor[tunnel.EdgeCredential](), reflect.TypeFor[AllowedEdges]()}
	for _, field := range EngineNames() {
		found := false
		for _, typ := range types {
			if _, ok := typ.FieldByName(field); ok {
				found = true
			}
		}
		if !found {
			t.Errorf("the schemas map %q, which no config type has", field)
		}
	}
}

func TestDecodeStartEdge(t *testing.T) {
	raw := json.RawMessage(`{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[80,443.0],"stunIntervalSecs":0,"unknown":1}`)
	obj, err := Parse(&raw)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tunnel.DefaultEdgeConfig()
	if err := StartEdge.Decode(obj, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.HubHost != "h" || cfg.EdgeID != "e" || cfg.Secret != "s" || !reflect.DeepEqual(cfg.ListenPorts, []int{80, 443}) ||
		cfg.StunInterval != -1 || cfg.HubPort != tunnel.DefaultTunnelPort || cfg.StunServer != tunnel.DefaultStunServer {
		t.Fatalf("decoded %+v", cfg)
	}
}

func TestDecodeErrorsNameTheParam(t *testing.T) {
	for raw, want := range map[string]string{
		`{"edgeId":"e","secret":"s","listenPorts":[80]}`:                                    "hubHost is required",
		`{"hubHost":1,"edgeId":"e","secret":"s","listenPorts":[80]}`:                        "hubHost must be a string",
		`{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[80,"x"]}`:                  "listenPorts[1] must be an integer",
		`{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":{}}`:                        "listenPorts must be an array of integers",
		`{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[1],"hubPort":1.5}`:         "hubPort must be an integer",
		`{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[1],"stunIntervalSecs":-1}`: "stunIntervalSecs must be an integer 0-2147483647",
	} {
		r := json.RawMessage(raw)
		obj, _ := Parse(&r)
		cfg := tunnel.DefaultEdgeConfig()
		err := StartEdge.Decode(obj, &cfg)
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
	for raw, want := range map[string]string{
		`{}`:                                   "edges is required",
		`{"edges":[{"id":"a"}]}`:               `edges[0].secret is required (edge "a")`,
		`{"edges":[{"id":"a","secret":2}]}`:    `edges[0].secret must be a string (edge "a")`,
		`{"edges":[3]}`:                        "edges[0] must be an object {id, secret}",
		`{"edges":"x"}`:                        "edges must be an array of {id, secret} objects",
		`{"edges":[{"secret":"s","id":null}]}`: "edges[0].id is required",
	} {
		r := json.RawMessage(raw)
		obj, _ := Parse(&r)
		var list AllowedEdges
		err := UpdateAllowedEdges.Decode(obj, &list)
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}

func TestParseRefusesNonObjects(t *testing.T) {
	for _, raw := range []string{`[]`, `1`, `"x"`} {
		r := json.RawMessage(raw)
		if _, err := Parse(&r); err != ErrNotObject {
			t.Errorf("Parse(%s) = %v", raw, err)
		}
	}
	if obj, err := Parse(nil); err != nil || len(obj) != 0 {
		t.Errorf("Parse(nil) = %v, %v", obj, err)
	}
}

func TestFromConfigError(t *testing.T) {
	pe, ok := FromConfigError(&tunnel.ConfigError{Field: "Edges[1].ID", Msg: `"a" duplicates`, Ref: "Edges[0].ID"})
	if !ok || pe.Error() != `edges[1].id "a" duplicates edges[0].id` {
		t.Fatalf("%v %v", pe, ok)
	}
	if _, ok := FromConfigError(nil); ok {
		t.Fatal("nil is no ConfigError")
	}
}

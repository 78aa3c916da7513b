package bridge

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/serve-zone/remoteingress/tunnel"
	"github.com/sourcegraph/jsonrpc2"
)

func TestParamPath(t *testing.T) {
	for field, want := range map[string]string{
		"HubHost":         "hubHost",
		"ListenPorts[2]":  "listenPorts[2]",
		"Edges[1].Secret": "edges[1].secret",
		"Edges[0].ID":     "edges[0].id",
		"StunInterval":    "stunIntervalSecs",
		"Connections":     "tunnelConnections",
		"DialTimeout":     "DialTimeout", // no param: the engine's name
	} {
		if got := paramPath(field); got != want {
			t.Errorf("paramPath(%q) = %q, want %q", field, got, want)
		}
	}
}

// Every name the bridge maps is a field of the engine's configs, so a
// renamed field shows here rather than as a Go name in a user's message.
func TestParamNamesAreConfigFields(t *testing.T) {
	types := []reflect.Type{reflect.TypeFor[tunnel.HubConfig](), reflect.TypeFor[tunnel.EdgeConfig](), reflect.TypeFor[tunnel.EdgeCredential]()}
	for field := range paramNames {
		if field == "Edges" { // the list given to ValidateEdgeList, not a field
			continue
		}
		found := false
		for _, typ := range types {
			if _, ok := typ.FieldByName(field); ok {
				found = true
			}
		}
		if !found {
			t.Errorf("paramNames maps %q, which no config type has", field)
		}
	}
}

// A ConfigError from a start is invalid params too, in the caller's names.
func TestConfigErrorFromEngineIsInvalidParams(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{startHubErr: fmt.Errorf("starting: %w", &tunnel.ConfigError{Field: "Edges[3].Secret", Msg: "must not be empty"})}
		s := startSession(t, d, eng.engine())
		s.skipReady()
		r := s.call("startHub", nil)
		if r.ok || r.message != "startHub: edges[3].secret must not be empty" {
			t.Fatalf("startHub: %+v", r)
		}
		if d == JSONRPC && r.code != jsonrpc2.CodeInvalidParams {
			t.Errorf("code %d, want %d", r.code, jsonrpc2.CodeInvalidParams)
		}
	})
}

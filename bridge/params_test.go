package bridge

import (
	"fmt"
	"testing"

	"github.com/serve-zone/remoteingress/tunnel"
	"github.com/sourcegraph/jsonrpc2"
)

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

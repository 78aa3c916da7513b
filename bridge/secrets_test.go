package bridge

import (
	"strings"
	"testing"
)

// TestSecretsNeverWritten sends secrets in good requests, failing requests
// and rejected lines, and checks that none reaches the output or the log
// (at debug level) in either dialect.
func TestSecretsNeverWritten(t *testing.T) {
	const marker = "TOPSECRET"
	dialects(t, func(t *testing.T, d Dialect) {
		eng := (&fakeEngine{}).engine()
		s := startSession(t, d, eng, func(o *Options) {
			o.maxLineBytes = 4096
			o.logBurst = 1 << 20 // every warning logged, to be checked
		})
		s.skipReady()
		secret := func(n string) string { return marker + "-" + n }
		edge := func(id, sec string) map[string]any { return map[string]any{"id": id, "secret": sec} }
		fail := func(method string, params any, text string) {
			t.Helper()
			if r := s.call(method, params); r.ok || !strings.Contains(r.message, text) {
				t.Fatalf("%s: got %+v, want a failure containing %q", method, r, text)
			}
		}

		s.mustCall("updateAllowedEdges", map[string]any{"edges": []any{edge("edge-a", secret("a")), edge("edge-b", secret("b"))}})
		s.mustCall("startHub", map[string]any{"tunnelPort": 0})
		s.mustCall("startEdge", with(edgeParams(80), "secret", secret("e")))

		// Failing calls with secrets in their params.
		fail("startEdge", with(edgeParams(81), "secret", secret("again")), "edge is already running")
		fail("startEdge", with(with(edgeParams(80), "secret", secret("ports")), "listenPorts", "80"), "listenPorts")
		fail("startEdge", with(with(edgeParams(80), "secret", secret("port0")), "listenPorts", []int{0}), "listenPorts")
		fail("startEdge", with(with(edgeParams(80), "secret", secret("hub")), "hubHost", 5), "hubHost")
		fail("startEdge", []string{secret("array")}, "params must be a JSON object")
		fail("startHub", map[string]any{"tunnelPort": 0, "tlsKeyPem": secret("key")}, "together")
		fail("startHub", map[string]any{"tlsCertPem": secret("cert"), "tlsKeyPem": secret("key2")}, "hub is already running")
		fail("updateAllowedEdges", map[string]any{"edges": []any{edge("dup", secret("d1")), edge("dup", secret("d2"))}}, "dup")
		fail("updateAllowedEdges", map[string]any{"edges": []any{edge("ok", secret("o")), edge("", secret("noid"))}}, "id")
		fail("updateAllowedEdges", map[string]any{"edges": []any{edge("nosecret", "")}}, "secret")
		fail("updateAllowedEdges", map[string]any{"edges": []any{edge(strings.Repeat("i", 300), secret("longid"))}}, "id")
		fail("updateAllowedEdges", map[string]any{"edges": secret("notalist")}, "edges must be an array")
		fail("updateAllowedEdges", map[string]any{"edges": []any{secret("notanobject")}}, "must be an object")
		fail("startEdgeX", map[string]any{"secret": secret("unknown")}, "startEdgeX")

		// Rejected lines carrying secrets.
		s.send(`{"id":"x","method":"startEdge","params":{"secret":"` + secret("cut") + `",`)
		s.expectFailure(`"x"`, -32700, "invalid JSON")
		s.send(`{"method":"startEdge","params":{"secret":"` + secret("noid") + `"},"id":`)
		s.expectRejectedWithoutID(-32700, "invalid JSON")
		s.send(`{"id":"y","params":{"secret":"` + secret("nomethod") + `"}}`)
		s.expectFailure(`"y"`, -32600, "no method")
		s.send(`{"id":"z","method":{"secret":"` + secret("method") + `"}}`)
		s.expectFailure(`"z"`, -32600, "method must be a string")
		s.send(`{"id":"w","method":"startEdge","params":{"secret":"` + secret("long") + `","pad":"` + strings.Repeat("p", 5000) + `"}}`)
		s.expectFailure(`"w"`, -32600, "exceeds the limit")
		s.send(`{"params":{"secret":"` + secret("longnoid") + `","pad":"` + strings.Repeat("p", 5000) + `"}}`)
		s.expectRejectedWithoutID(-32600, "exceeds the limit")
		if d == Management {
			s.send(`{"method":"startEdge","params":{"secret":"` + secret("notif") + `"}}`)
		}

		s.mustCall("getHubStatus", nil)
		s.mustCall("getEdgeStatus", nil)
		s.mustCall("stopEdge", nil)
		s.mustCall("stopHub", nil)
		s.closeInput()
		if err := s.wait(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if out, logs := s.out.String(), s.logs.String(); strings.Contains(out, marker) || strings.Contains(logs, marker) {
			t.Fatalf("a secret was written:\nout:\n%s\nlogs:\n%s", out, logs)
		}
		// Every failure was logged, and so checked.
		if n := strings.Count(s.logs.String(), `msg="request failed"`); n != 14 {
			t.Fatalf("%d failed requests logged, want 14:\n%s", n, s.logs.String())
		}
		rejected := 6
		if d == Management {
			rejected++ // the request without an id
		}
		if n := strings.Count(s.logs.String(), `msg="rejected input line"`); n != rejected {
			t.Fatalf("%d rejected lines logged, want %d:\n%s", n, rejected, s.logs.String())
		}
	})
}

package bridge

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

func TestReadyIsTheFirstLine(t *testing.T) {
	want := map[Dialect]string{
		Management: `{"event":"ready","data":{"version":"1.2.3-test"}}`,
		JSONRPC:    `{"jsonrpc":"2.0","method":"ready","params":{"version":"1.2.3-test"}}`,
	}
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		got := s.next().raw
		var g, w any
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(want[d]), &w); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, g); diff != "" {
			t.Fatalf("ready line (-want +got):\n%s", diff)
		}
	})
}

func TestPing(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		s.expectPingNext()
		s.expectPingNext()
	})
}

func TestManagementAnswerShapes(t *testing.T) {
	s := startSession(t, Management, (&fakeEngine{}).engine())
	s.skipReady()
	s.send(`{"id":"req_1","method":"ping","params":{}}`)
	if got, want := s.next().raw, `{"id":"req_1","success":true,"result":{"pong":true}}`; got != want {
		t.Fatalf("success line: got %s, want %s", got, want)
	}
	s.send(`{"id":"req_2","method":"nope"}`)
	if got, want := s.next().raw, `{"id":"req_2","success":false,"error":"unknown method \"nope\""}`; got != want {
		t.Fatalf("failure line: got %s, want %s", got, want)
	}
	s.send(`{"id":7,"method":"ping"}`)
	if got, want := s.next().raw, `{"id":7,"success":true,"result":{"pong":true}}`; got != want {
		t.Fatalf("numeric id: got %s, want %s", got, want)
	}
}

func TestGarbageLineThenPing(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		s.send(`this is not json SECRETGARBAGE`)
		if d == JSONRPC {
			m := s.next()
			r := s.replyOf(m)
			if r.ok || r.code != jsonrpc2.CodeParseError || string(m.ID) != "null" {
				t.Fatalf("garbage: got %s", m.raw)
			}
		}
		s.expectPingNext()
		logs := s.logs.String()
		if !strings.Contains(logs, "rejected input line") {
			t.Fatalf("garbage line not logged: %s", logs)
		}
		if strings.Contains(logs, "SECRETGARBAGE") || strings.Contains(s.out.String(), "SECRETGARBAGE") {
			t.Fatalf("the bad line was echoed:\nlogs: %s\nout: %s", logs, s.out.String())
		}
	})
}

func TestBadLines(t *testing.T) {
	type want struct {
		answered bool   // an answer is written
		id       string // its id (raw JSON)
		code     int64  // its code (JSON-RPC)
		text     string // part of its message
	}
	cases := []struct {
		name       string
		line       string
		management want
		jsonrpc    want
	}{
		{"no method", `{"id":"m1","params":{}}`,
			want{true, `"m1"`, 0, "no method"}, want{true, `"m1"`, jsonrpc2.CodeInvalidRequest, "no method"}},
		{"method not a string", `{"id":"m2","method":5}`,
			want{true, `"m2"`, 0, "method must be a string"}, want{true, `"m2"`, jsonrpc2.CodeInvalidRequest, "method must be a string"}},
		{"broken JSON with id", `{"id":"b1","method":"ping",`,
			want{true, `"b1"`, 0, "invalid JSON"}, want{true, `"b1"`, jsonrpc2.CodeParseError, "invalid JSON"}},
		{"broken JSON, id after the break", `{"method":"ping",,"id":"b2"}`,
			want{}, want{true, "null", jsonrpc2.CodeParseError, "invalid JSON"}},
		{"array", `[1,2]`,
			want{}, want{true, "null", jsonrpc2.CodeInvalidRequest, "JSON object"}},
		{"string", `"ping"`,
			want{}, want{true, "null", jsonrpc2.CodeInvalidRequest, "JSON object"}},
		{"null", `null`,
			want{}, want{true, "null", jsonrpc2.CodeInvalidRequest, "JSON object"}},
		{"object id", `{"id":{"a":1},"method":"ping"}`,
			want{true, `{"a":1}`, 0, "id must be"}, want{true, "null", jsonrpc2.CodeInvalidRequest, "id must be"}},
		{"fractional id", `{"id":1.5,"method":"ping"}`,
			want{true, `1.5`, 0, "id must be"}, want{true, "null", jsonrpc2.CodeInvalidRequest, "id must be"}},
		{"negative id", `{"id":-1,"method":"ping"}`,
			want{true, `-1`, 0, "id must be"}, want{true, "null", jsonrpc2.CodeInvalidRequest, "id must be"}},
	}
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		for _, c := range cases {
			w := c.management
			if d == JSONRPC {
				w = c.jsonrpc
			}
			s.send(c.line)
			if w.answered {
				m := s.next()
				r := s.replyOf(m)
				if r.ok || string(m.ID) != w.id || r.code != w.code || !strings.Contains(r.message, w.text) {
					t.Errorf("%s: got %s, want id %s code %d containing %q", c.name, m.raw, w.id, w.code, w.text)
				}
			}
			// The line never kills the session: the next answer is the ping's.
			s.expectPingNext()
		}
	})
}

func TestUnknownMethodIsNamed(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		r := s.call("frobnicate", map[string]any{})
		if r.ok || !strings.Contains(r.message, `"frobnicate"`) {
			t.Fatalf("unknown method: %+v", r)
		}
		if d == JSONRPC && r.code != jsonrpc2.CodeMethodNotFound {
			t.Fatalf("code %d, want %d", r.code, jsonrpc2.CodeMethodNotFound)
		}
	})
}

func TestBlankLinesAndCRLF(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		s.send("")
		s.send("   \t ")
		s.send("\r")
		s.send(s.requestLine(`"crlf"`, "ping", nil) + "\r")
		m := s.next()
		if string(m.ID) != `"crlf"` || !s.replyOf(m).ok {
			t.Fatalf("CRLF ping: got %s", m.raw)
		}
		s.expectPingNext()
	})
}

func TestManagementRequestWithoutIDIsIgnored(t *testing.T) {
	s := startSession(t, Management, (&fakeEngine{}).engine())
	s.skipReady()
	s.send(`{"method":"ping"}`)
	s.send(`{"id":null,"method":"ping"}`)
	s.expectPingNext()
	if !strings.Contains(s.logs.String(), "request has no id") {
		t.Fatalf("not logged: %s", s.logs.String())
	}
}

func TestJSONRPCNotificationsAreNotAnswered(t *testing.T) {
	eng := &fakeEngine{}
	s := startSession(t, JSONRPC, eng.engine())
	s.skipReady()
	s.send(`{"jsonrpc":"2.0","method":"ping"}`)
	s.send(`{"jsonrpc":"2.0","method":"nope"}`)
	s.expectPingNext()
}

func TestJSONRPCVersionIsChecked(t *testing.T) {
	s := startSession(t, JSONRPC, (&fakeEngine{}).engine())
	s.skipReady()
	s.send(`{"jsonrpc":"1.0","id":3,"method":"ping"}`)
	m := s.next()
	if r := s.replyOf(m); r.ok || r.code != jsonrpc2.CodeInvalidRequest || string(m.ID) != "3" {
		t.Fatalf("got %s", m.raw)
	}
	// Without the member the request is accepted.
	s.send(`{"id":4,"method":"ping"}`)
	if m := s.next(); string(m.ID) != "4" || !s.replyOf(m).ok {
		t.Fatalf("got %s", m.raw)
	}
}

// bigPing is a ping whose params carry n bytes of payload.
func bigPing(id string, n int) string {
	return `{"id":` + id + `,"method":"ping","params":{"blob":"` + strings.Repeat("x", n) + `"}}`
}

func TestTenMiBLine(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		s.send(bigPing(`"big"`, 10<<20))
		m := s.next()
		if string(m.ID) != `"big"` || !s.replyOf(m).ok {
			t.Fatalf("10 MiB ping: got %s", truncate(m.raw, 200))
		}
		s.expectPingNext()
	})
}

func TestOverlongLine(t *testing.T) {
	t.Run("50MiB", func(t *testing.T) {
		s := startSession(t, Management, (&fakeEngine{}).engine())
		s.skipReady()
		line := bigPing(`"huge"`, MaxLineBytes)
		s.send(line)
		m := s.next()
		r := s.replyOf(m)
		if r.ok || string(m.ID) != `"huge"` || !strings.Contains(r.message, "exceeds the limit") {
			t.Fatalf("over-long line: got %s", m.raw)
		}
		s.expectPingNext()
	})
	dialects(t, func(t *testing.T, d Dialect) {
		small := func(o *Options) { o.maxLineBytes = 1000 }
		s := startSession(t, d, (&fakeEngine{}).engine(), small)
		s.skipReady()

		// At the limit: accepted.
		n := 1000 - len(bigPing(`"atlim"`, 0))
		exact := bigPing(`"atlim"`, n)
		if len(exact) != 1000 {
			t.Fatalf("test line is %d bytes", len(exact))
		}
		s.send(exact)
		if m := s.next(); string(m.ID) != `"atlim"` || !s.replyOf(m).ok {
			t.Fatalf("line at the limit: got %s", m.raw)
		}

		// One byte over: rejected, with the id recovered from its start.
		over := bigPing(`"overl"`, n+1)
		if len(over) != 1001 {
			t.Fatalf("test line is %d bytes", len(over))
		}
		s.send(over)
		m := s.next()
		r := s.replyOf(m)
		if r.ok || string(m.ID) != `"overl"` || !strings.Contains(r.message, "1001 bytes exceeds the limit of 1000 bytes") {
			t.Fatalf("line over the limit: got %s", m.raw)
		}
		if d == JSONRPC && r.code != jsonrpc2.CodeInvalidRequest {
			t.Fatalf("code %d", r.code)
		}

		// Over the limit with the id out of reach: answered only in JSON-RPC (id null).
		s.send(`{"params":{"blob":"` + strings.Repeat("y", 100000) + `"},"id":"late","method":"ping"}`)
		if d == JSONRPC {
			m := s.next()
			if r := s.replyOf(m); r.ok || string(m.ID) != "null" {
				t.Fatalf("got %s", m.raw)
			}
		}
		s.expectPingNext()
	})
}

func TestAnswersAreWrittenBeforeEndOfInputCloses(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		var out testutil.SyncBuffer
		in := strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n" + `{"jsonrpc":"2.0","id":2,"method":"getHubStatus"}`)
		if err := run(t.Context(), in, &out, Options{Dialect: d}, (&fakeEngine{}).engine()); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 3 {
			t.Fatalf("want ready and two answers, got %q", lines)
		}
		ids := map[string]bool{}
		for _, l := range lines[1:] {
			var m msg
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			m.raw = l
			if !replyOf(t, d, m).ok {
				t.Fatalf("failed: %s", l)
			}
			ids[string(m.ID)] = true
		}
		if !ids["1"] || !ids["2"] {
			t.Fatalf("answers: %q", lines)
		}
	})
}

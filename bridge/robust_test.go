package bridge

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// expectFailure reads the next line, the failed answer to id (raw JSON), and
// checks its message contains text and, in JSON-RPC, its code.
func (s *session) expectFailure(id string, code int64, text string) {
	s.t.Helper()
	m := s.next()
	r := s.replyOf(m)
	if r.ok || string(m.ID) != id || !strings.Contains(r.message, text) || (s.dialect == JSONRPC && r.code != code) {
		s.t.Fatalf("want a failure for %s with code %d containing %q, got %s", id, code, text, m.raw)
	}
}

// expectRejectedWithoutID reads the answer to a line without a recoverable
// id: none in the management dialect, an error with a null id in JSON-RPC.
func (s *session) expectRejectedWithoutID(code int64, text string) {
	s.t.Helper()
	if s.dialect == JSONRPC {
		s.expectFailure("null", code, text)
	}
}

// checkOutputIsUTF8 fails if anything written to the output is not valid UTF-8.
func (s *session) checkOutputIsUTF8() {
	s.t.Helper()
	if out := s.out.String(); !utf8.ValidString(out) {
		s.t.Fatalf("output is not valid UTF-8: %q", out)
	}
}

func TestInvalidUTF8(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		v := ""
		if d == JSONRPC {
			v = `"jsonrpc":"2.0",`
		}
		// In a method name: an unknown method, named with U+FFFD.
		s.send(`{` + v + `"id":"u1","method":"pi` + "\xff\xfe" + `ng"}`)
		s.expectFailure(`"u1"`, jsonrpc2.CodeMethodNotFound, "unknown method \"pi\ufffd\ufffdng\"")
		// In an id: answered under the id as decoded.
		s.send(`{` + v + `"id":"u` + "\xff" + `2","method":"ping"}`)
		if m := s.next(); string(m.ID) != `"u`+"\ufffd"+`2"` || !s.replyOf(m).ok {
			t.Fatalf("ping with a non-UTF-8 id: %s", m.raw)
		}
		// In params that are ignored, and in params that are read.
		s.send(`{` + v + `"id":"u3","method":"ping","params":{"x":"` + "\xc3\x28" + `"}}`)
		if m := s.next(); string(m.ID) != `"u3"` || !s.replyOf(m).ok {
			t.Fatalf("ping with non-UTF-8 params: %s", m.raw)
		}
		s.send(`{` + v + `"id":"u4","method":"startHub","params":{"tunnelPort":"` + "\xff" + `"}}`)
		s.expectFailure(`"u4"`, jsonrpc2.CodeInvalidParams, "tunnelPort must be an integer")
		// Outside strings: not JSON.
		s.send("\xff\xfe" + `{"id":"u5","method":"ping"}`)
		s.expectRejectedWithoutID(jsonrpc2.CodeParseError, "invalid JSON at byte 1")
		// A broken line whose id is not UTF-8 (found by FuzzManagementLine):
		// the id is echoed, as valid UTF-8.
		s.send(`{"id":"` + "\xff" + `"`)
		s.expectFailure(`"`+"\ufffd"+`"`, jsonrpc2.CodeParseError, "invalid JSON")
		s.send(`{"id":{"k":"` + "\xff" + `"},"method":"ping"}`)
		if d == Management {
			s.expectFailure(`{"k":"`+"\ufffd"+`"}`, 0, "id must be")
		} else {
			s.expectRejectedWithoutID(jsonrpc2.CodeInvalidRequest, "id must be")
		}
		s.expectPingNext()
		s.checkOutputIsUTF8()
	})
}

func TestDeeplyNestedJSON(t *testing.T) {
	const depth = 100000
	deep := strings.Repeat("[", depth) + strings.Repeat("]", depth)
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		s.send(deep)
		s.expectRejectedWithoutID(jsonrpc2.CodeParseError, "JSON nested too deeply at byte 10001")
		s.send(`{"id":"deep","method":"ping","params":` + deep + `}`)
		s.expectFailure(`"deep"`, jsonrpc2.CodeParseError, "JSON nested too deeply")
		s.send(`{"id":"deep2","method":"ping","params":` + strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth) + `}`)
		s.expectFailure(`"deep2"`, jsonrpc2.CodeParseError, "JSON nested too deeply")
		// Unterminated, with the id after the nesting: no id to be found.
		s.send(strings.Repeat(`{"a":`, depth) + `"id":"late"`)
		s.expectRejectedWithoutID(jsonrpc2.CodeParseError, "nested too deeply")
		s.expectPingNext()
	})
}

func TestNULBytes(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		s.send(`{"id":"z1","method":"ping"}` + "\x00")
		s.expectFailure(`"z1"`, jsonrpc2.CodeParseError, "invalid JSON at byte 28")
		s.send(`{"id":"z2","method":"pi` + "\x00" + `ng"}`) // raw control character in a string
		s.expectFailure(`"z2"`, jsonrpc2.CodeParseError, "invalid JSON")
		s.send(`{"id":"z3","method":"pi\u0000ng"}`) // escaped: a method with a NUL
		s.expectFailure(`"z3"`, jsonrpc2.CodeMethodNotFound, `unknown method "pi\x00ng"`)
		s.send("\x00")
		s.expectRejectedWithoutID(jsonrpc2.CodeParseError, "invalid JSON at byte 1")
		s.expectPingNext()
		s.checkOutputIsUTF8()
	})
}

func TestByteOrderMarkIsIgnored(t *testing.T) {
	dialects(t, func(t *testing.T, d Dialect) {
		s := startSession(t, d, (&fakeEngine{}).engine())
		s.skipReady()
		// At the start of the stream, and of a later line.
		for _, id := range []string{`"bom1"`, `"bom2"`} {
			s.send("\ufeff" + s.requestLine(id, "ping", nil))
			if m := s.next(); string(m.ID) != id || !s.replyOf(m).ok {
				t.Fatalf("ping after a BOM: %s", m.raw)
			}
		}
		// Only one is ignored; one in the middle is not JSON.
		s.send("\ufeff\ufeff" + s.requestLine(`"bom3"`, "ping", nil))
		s.expectRejectedWithoutID(jsonrpc2.CodeParseError, "invalid JSON at byte 1")
		s.send(`{"id":"bom4",` + "\ufeff" + `"method":"ping"}`)
		s.expectFailure(`"bom4"`, jsonrpc2.CodeParseError, "invalid JSON")
		s.expectPingNext()
	})
}

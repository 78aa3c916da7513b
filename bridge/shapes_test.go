package bridge

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// members decodes an output line into its members, failing unless it is one
// line of valid UTF-8 holding a JSON object.
func members(t testing.TB, line []byte) map[string]json.RawMessage {
	t.Helper()
	if bytes.ContainsAny(line, "\r\n") || !utf8.Valid(line) {
		t.Fatalf("output line is not one line of valid UTF-8: %q", line)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil || m == nil {
		t.Fatalf("output line is not a JSON object: %q: %v", line, err)
	}
	return m
}

// hasExactly reports whether m has exactly the members names.
func hasExactly(m map[string]json.RawMessage, names ...string) bool {
	if len(m) != len(names) {
		return false
	}
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return false
		}
	}
	return true
}

// nonEmptyString reports whether raw is a JSON string other than "".
func nonEmptyString(raw json.RawMessage) bool {
	var s string
	return json.Unmarshal(raw, &s) == nil && s != ""
}

// checkManagementLine fails unless line is a management answer
// {"id","success":true,"result"} / {"id","success":false,"error"} or an
// event {"event","data"}. It returns the line's members.
func checkManagementLine(t testing.TB, line []byte) map[string]json.RawMessage {
	t.Helper()
	m := members(t, line)
	switch {
	case hasExactly(m, "event", "data"):
		if !nonEmptyString(m["event"]) || isNull(m["data"]) {
			t.Fatalf("bad event line %q", line)
		}
	case hasExactly(m, "id", "success", "result"):
		if string(m["success"]) != "true" || isNull(m["id"]) {
			t.Fatalf("bad success line %q", line)
		}
	case hasExactly(m, "id", "success", "error"):
		if string(m["success"]) != "false" || isNull(m["id"]) || !nonEmptyString(m["error"]) {
			t.Fatalf("bad failure line %q", line)
		}
	default:
		t.Fatalf("output line of no allowed shape: %q", line)
	}
	return m
}

// checkJSONRPCLine fails unless line is a JSON-RPC 2.0 response (result or
// error {code, message}) or notification. It returns the line's members.
func checkJSONRPCLine(t testing.TB, line []byte) map[string]json.RawMessage {
	t.Helper()
	m := members(t, line)
	if string(m["jsonrpc"]) != `"2.0"` {
		t.Fatalf("not JSON-RPC 2.0: %q", line)
	}
	switch {
	case hasExactly(m, "jsonrpc", "method", "params") || hasExactly(m, "jsonrpc", "method"):
		if !nonEmptyString(m["method"]) {
			t.Fatalf("bad notification %q", line)
		}
	case hasExactly(m, "jsonrpc", "id", "result"):
		checkJSONRPCID(t, m["id"], false, line)
	case hasExactly(m, "jsonrpc", "id", "error"):
		checkJSONRPCID(t, m["id"], true, line)
		var e map[string]json.RawMessage
		if err := json.Unmarshal(m["error"], &e); err != nil || !hasExactly(e, "code", "message") && !hasExactly(e, "code", "message", "data") {
			t.Fatalf("bad error object %q", line)
		}
		if _, ok := intValue(e["code"]); !ok || !nonEmptyString(e["message"]) {
			t.Fatalf("bad error object %q", line)
		}
	default:
		t.Fatalf("output line of no allowed shape: %q", line)
	}
	return m
}

// checkJSONRPCID fails unless raw is a string, a non-negative integer or (for
// errors) null.
func checkJSONRPCID(t testing.TB, raw json.RawMessage, nullOK bool, line []byte) {
	t.Helper()
	if _, ok := parseID(raw); ok || (nullOK && string(raw) == "null") {
		return
	}
	t.Fatalf("bad response id in %q", line)
}

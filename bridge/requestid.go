package bridge

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// parseID accepts a request id that is a JSON string or a non-negative
// integer (what jsonrpc2.ID can carry).
func parseID(raw json.RawMessage) (jsonrpc2.ID, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return jsonrpc2.ID{}, false
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return jsonrpc2.ID{}, false
		}
		return jsonrpc2.ID{Str: s, IsString: true}, true
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		return jsonrpc2.ID{}, false
	}
	return jsonrpc2.ID{Num: uint64(n)}, true
}

// leadingID recovers the top-level "id" member of a JSON object from b, which
// may be only the start of the object or broken further on. It returns nil
// when no complete id precedes the end or the first syntax error.
func leadingID(b []byte) json.RawMessage {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil // not an object: spare the decoder
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil
		}
		if key == "id" {
			if isNull(value) {
				return nil
			}
			return value
		}
	}
	return nil
}

// isNull reports whether raw is absent or the JSON literal null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// logID renders a raw id for a log line, truncated.
func logID(raw json.RawMessage) string {
	return truncate(string(raw), 64)
}

// truncate shortens s to at most n bytes, marking the cut. It never cuts a
// UTF-8 sequence in two.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut > n-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

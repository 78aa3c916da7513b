package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sourcegraph/jsonrpc2"
)

// rejection is an input line that does not reach the handler: it is logged
// and, where the dialect allows, answered with an error.
type rejection struct {
	// id is the raw id found in the line, nil if none.
	id json.RawMessage
	// idValid reports that id is a string or a non-negative integer.
	idValid bool
	// code is the JSON-RPC error code.
	code int64
	// message says what is wrong; it never quotes the line.
	message string
	// method is the method named by the line, if any (for the log).
	method string
}

// newRejection builds a rejection carrying whatever id raw holds.
func newRejection(raw json.RawMessage, code int64, format string, args ...any) *rejection {
	r := &rejection{code: code, message: fmt.Sprintf(format, args...)}
	if !isNull(raw) {
		r.id = raw
		_, r.idValid = parseID(raw)
	}
	return r
}

// tooLongRejection answers a line longer than max bytes, of which prefix is the start.
func tooLongRejection(l line, max int) *rejection {
	return newRejection(leadingID(l.data), jsonrpc2.CodeInvalidRequest,
		"request line of %d bytes exceeds the limit of %d bytes; ignored", l.size, max)
}

// parseRequest turns one input line into the JSON-RPC 2.0 request the
// jsonrpc2.Conn reads (hasID: it expects an answer), or a rejection. strict applies the JSON-RPC checks
// (the "jsonrpc" member); needID rejects requests without an id. The params
// go to store; the request refers to them in its meta.
func parseRequest(data []byte, strict, needID bool, store *paramStore) (req []byte, hasID bool, rej *rejection) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			what := "invalid JSON"
			if strings.HasSuffix(se.Error(), "exceeded max depth") {
				what = "JSON nested too deeply"
			}
			return nil, false, newRejection(leadingID(data), jsonrpc2.CodeParseError,
				"%s at byte %d", what, se.Offset)
		}
		return nil, false, newRejection(nil, jsonrpc2.CodeInvalidRequest, "a request must be a JSON object")
	}
	if m == nil {
		return nil, false, newRejection(nil, jsonrpc2.CodeInvalidRequest, "a request must be a JSON object")
	}

	rawID, hasID := m["id"]
	hasID = hasID && !isNull(rawID)
	id, idValid := parseID(rawID)
	if hasID && !idValid {
		return nil, false, newRejection(rawID, jsonrpc2.CodeInvalidRequest, "id must be a string or a non-negative integer")
	}
	if v, ok := m["jsonrpc"]; strict && ok && string(bytes.TrimSpace(v)) != `"2.0"` {
		return nil, false, newRejection(rawID, jsonrpc2.CodeInvalidRequest, `jsonrpc must be "2.0"`)
	}
	rawMethod, ok := m["method"]
	if !ok || isNull(rawMethod) {
		return nil, false, newRejection(rawID, jsonrpc2.CodeInvalidRequest, "request has no method")
	}
	var method string
	if err := json.Unmarshal(rawMethod, &method); err != nil {
		return nil, false, newRejection(rawID, jsonrpc2.CodeInvalidRequest, "method must be a string")
	}
	if needID && !hasID {
		r := newRejection(nil, jsonrpc2.CodeInvalidRequest, "request has no id; ignored")
		r.method = method
		return nil, false, r
	}

	var b bytes.Buffer
	b.Grow(len(method) + 96) // the params stay in store
	b.WriteString(`{"jsonrpc":"2.0","method":`)
	b.Write(mustMarshal(method))
	if hasID {
		b.WriteString(`,"id":`)
		b.Write(mustMarshal(id))
	}
	if params, ok := m["params"]; ok {
		b.WriteString(`,"meta":{"paramsRef":`)
		b.WriteString(strconv.FormatUint(store.put(params), 10))
		b.WriteByte('}')
	}
	b.WriteByte('}')
	return b.Bytes(), hasID, nil
}

// mustMarshal encodes values that always encode (strings, ids).
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

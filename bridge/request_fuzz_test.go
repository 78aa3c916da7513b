package bridge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// maxFuzzInput bounds the inputs of the fuzz targets, to keep iterations fast.
const maxFuzzInput = 64 << 10

// lineSeeds are request lines of both dialects and the known bad shapes.
func lineSeeds() []string {
	deep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001) // one over encoding/json's limit
	return []string{
		`{"id":"req_1","method":"ping","params":{}}`,
		`{"id":"req_2","method":"startHub","params":{"tunnelPort":0,"targetHost":"127.0.0.2"}}`,
		`{"id":"req_3","method":"startEdge","params":{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[80]}}`,
		`{"id":"req_4","method":"updateAllowedEdges","params":{"edges":[{"id":"a","secret":"b"}]}}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":"x","method":"getHubStatus","params":null}`,
		`{"jsonrpc":"2.0","method":"ping"}`,
		`{"jsonrpc":"1.0","id":3,"method":"ping"}`,
		`{"id":7,"method":"ping"}` + "\r",
		"\ufeff" + `{"id":"bom","method":"ping"}`,
		`garbage`,
		``,
		`{}`,
		`{"id":"m1","params":{}}`,
		`{"id":"m2","method":5}`,
		`{"id":"m3","method":null}`,
		`{"method":"ping"}`,
		`{"id":null,"method":"ping"}`,
		`[1,2]`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]`,
		`"ping"`,
		`null`,
		`42`,
		`{"id":"b1","method":"ping",`,
		`{"method":"ping",,"id":"b2"}`,
		`{"id":"deep","method":"ping","params":` + deep + `}`,
		deep,
		`{"id":{"a":1},"method":"ping"}`,
		`{"id":1.5,"method":"ping"}`,
		`{"id":-1,"method":"ping"}`,
		`{"id":1e3,"method":"ping"}`,
		`{"id":9223372036854775807,"method":"ping"}`,
		`{"id":9223372036854775808,"method":"ping"}`,
		`{"id":123456789012345678901234567890,"method":"ping"}`,
		`{"id":"` + strings.Repeat("i", 5000) + `","method":"ping"}`,
		`{"id":"a` + "\xff" + `","method":"ping"}`,
		`{"id":"x","method":"pi` + "\xff\xfe" + `ng"}`,
		"\xff\xfe\xfd",
		`{"id":"n","method":"pi` + "\x00" + `ng"}`,
		`{"id":"n2","method":"pi\u0000ng"}`,
		"{\"id\":\"n3\",\x00\"method\":\"ping\"}",
		`{"id":"d","method":"a","method":"ping","id":"e"}`,
		`{"id":"x","method":"startEdge","params":{"secret":"TOPSECRET",`,
		`{"id":"h","method":"ping","params":{"a":"<&>\u2028"}}`,
	}
}

// FuzzManagementLine checks parseRequest in the management dialect.
func FuzzManagementLine(f *testing.F) {
	for _, s := range lineSeeds() {
		f.Add([]byte(s))
	}
	limitMinimizeTime(5 * time.Second)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			t.Skip()
		}
		checkLine(t, managementCodec{}, data)
	})
}

// FuzzJSONRPCLine checks parseRequest in the JSON-RPC dialect.
func FuzzJSONRPCLine(f *testing.F) {
	for _, s := range lineSeeds() {
		f.Add([]byte(s))
	}
	limitMinimizeTime(5 * time.Second)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			t.Skip()
		}
		checkLine(t, jsonrpcCodec{}, data)
	})
}

// checkLine runs one line through c and checks the properties every line has.
func checkLine(t *testing.T, c codec, data []byte) {
	t.Helper()
	store := &paramStore{}
	req, hasID, rej := c.request(bytes.Clone(data), store)
	if rej != nil {
		checkRejection(t, c, data, rej)
		if req != nil || store.size() != 0 {
			t.Fatalf("a rejected line left a request or params behind")
		}
		return
	}
	checkAccepted(t, c, data, req, hasID, store)
}

// checkRejection: the id a rejection names occurs in the input, its message
// does not quote the input, and its answer is a valid line of the dialect.
func checkRejection(t *testing.T, c codec, data []byte, rej *rejection) {
	t.Helper()
	if rej.id != nil && !bytes.Contains(data, rej.id) {
		t.Fatalf("rejection names id %q, which is not in the input", rej.id)
	}
	if rej.message == "" || rej.code == 0 {
		t.Fatalf("rejection without message or code: %+v", rej)
	}
	answer := c.reject(rej)
	if answer == nil {
		if _, ok := c.(jsonrpcCodec); ok {
			t.Fatal("a rejected JSON-RPC line got no answer")
		}
		if rej.id != nil {
			t.Fatal("a rejected management line with an id got no answer")
		}
		return
	}
	if bytes.ContainsRune(answer, '\n') || !utf8.Valid(answer) || !json.Valid(answer) {
		t.Fatalf("answer is not one line of valid UTF-8 JSON: %q", answer)
	}
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(answer, &shape); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(jsonrpcCodec); ok {
		checkJSONRPCLine(t, answer)
	} else {
		checkManagementLine(t, answer)
	}
}

// checkAccepted: the request the Conn reads carries the method, id and params of the input.
func checkAccepted(t *testing.T, c codec, data, req []byte, hasID bool, store *paramStore) {
	t.Helper()
	var in map[string]json.RawMessage
	if err := json.Unmarshal(data, &in); err != nil {
		t.Fatalf("accepted a line that is not a JSON object: %v", err)
	}
	var method string
	if err := json.Unmarshal(in["method"], &method); err != nil {
		t.Fatalf("accepted a line without a string method: %v", err)
	}
	wantID, idOK := parseID(in["id"])
	if hasID != idOK {
		t.Fatalf("hasID %v, but the input's id parses: %v", hasID, idOK)
	}
	if _, ok := c.(managementCodec); ok && !hasID {
		t.Fatal("the management dialect accepted a request without an id")
	}

	var got jsonrpc2.Request
	if err := json.Unmarshal(req, &got); err != nil {
		t.Fatalf("the request %q does not decode: %v", req, err)
	}
	if got.Method != method {
		t.Fatalf("method %q, want %q", got.Method, method)
	}
	if got.Notif == hasID || (hasID && got.ID != wantID) {
		t.Fatalf("id %+v (notif %v), want %+v (hasID %v)", got.ID, got.Notif, wantID, hasID)
	}
	params := store.take(&got)
	want, had := in["params"]
	switch {
	case !had && params != nil:
		t.Fatalf("params %q appeared", *params)
	case had && (params == nil || !bytes.Equal(*params, want)):
		t.Fatalf("params %v, want %q", params, want)
	}
	if store.size() != 0 {
		t.Fatal("params left in the store")
	}
}

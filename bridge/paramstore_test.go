package bridge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

func TestParamsTravelBesideTheConn(t *testing.T) {
	store := &paramStore{}
	params := `{"blob":"` + strings.Repeat("p", 1000) + `","n":1.50}`
	in := strings.NewReader(`{"id":"a","method":"startHub","params":` + params + "}\n" + `{"id":"b","method":"ping"}` + "\n")
	st := newLineStream(in, &bytes.Buffer{}, managementCodec{}, 1<<20, store, discardLogger())

	var req jsonrpc2.Request
	if err := st.ReadObject(&req); err != nil {
		t.Fatal(err)
	}
	if req.Method != "startHub" || req.ID != (jsonrpc2.ID{Str: "a", IsString: true}) || req.Params != nil {
		t.Fatalf("request %+v", req)
	}
	got := store.take(&req)
	if got == nil || string(*got) != params {
		t.Fatalf("params not carried byte for byte: %v", got)
	}
	if store.size() != 0 {
		t.Fatalf("%d params left in the store", store.size())
	}

	var req2 jsonrpc2.Request
	if err := st.ReadObject(&req2); err != nil {
		t.Fatal(err)
	}
	if p := store.take(&req2); p != nil {
		t.Fatalf("a request without params got %s", *p)
	}

	// A request that did not come through the stream keeps its own params.
	own := json.RawMessage(`{"x":1}`)
	if p := store.take(&jsonrpc2.Request{Method: "m", Params: &own}); p == nil || string(*p) != `{"x":1}` {
		t.Fatalf("own params: %v", p)
	}
}

func TestEveryRequestLeavesTheStoreEmpty(t *testing.T) {
	store := &paramStore{}
	srv := newServer((&fakeEngine{}).engine(), newEventQueue(1, discardLogger()), store, discardLogger())
	var out testutil.SyncBuffer
	in := strings.NewReader(strings.Join([]string{
		`{"id":"1","method":"ping","params":{}}`,
		`{"id":"2","method":"nope","params":{"a":1}}`,
		`{"id":"3","method":"startEdge","params":[1]}`,
		`{"id":"4","method":"getHubStatus","params":null}`,
	}, "\n"))
	st := newLineStream(in, &out, managementCodec{}, 1<<20, store, discardLogger())
	conn := jsonrpc2.NewConn(t.Context(), st, jsonrpc2.AsyncHandler(srv))
	<-conn.DisconnectNotify() // the input ended after every answer was written
	if n := strings.Count(out.String(), "\n"); n != 4 {
		t.Fatalf("%d answers, want 4:\n%s", n, out.String())
	}
	if store.size() != 0 {
		t.Fatalf("%d params left in the store", store.size())
	}
}

// size is the number of params not yet taken (for tests only).
func (p *paramStore) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

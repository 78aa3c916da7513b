package bridge

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/sourcegraph/jsonrpc2"
)

func TestClosedStreamNeitherReadsNorWrites(t *testing.T) {
	var out bytes.Buffer
	in := strings.NewReader("garbage\n" + `{"id":"a","method":"ping"}` + "\n")
	st := newLineStream(in, &out, managementCodec{}, 1<<20, &paramStore{}, discardLogger())
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var req jsonrpc2.Request
	if err := st.ReadObject(&req); !errors.Is(err, io.EOF) {
		t.Fatalf("ReadObject after Close: %v", err)
	}
	if err := st.WriteObject(&jsonrpc2.Request{Method: "x", Notif: true}); !errors.Is(err, jsonrpc2.ErrClosed) {
		t.Fatalf("WriteObject after Close: %v", err)
	}
	if out.Len() != 0 {
		t.Fatalf("written after Close: %q", out.String())
	}
}

func TestRejectedLinesShareTheWriteLock(t *testing.T) {
	// Answers to bad lines and Conn messages go through one lock: out is a
	// plain buffer, so under -race an unlocked write is reported.
	var out bytes.Buffer
	var lines []string
	for range 200 {
		lines = append(lines, `{"id":"bad","params":{}}`)
	}
	st := newLineStream(strings.NewReader(strings.Join(lines, "\n")), &out, managementCodec{}, 1<<20, &paramStore{}, discardLogger())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var req jsonrpc2.Request
		_ = st.ReadObject(&req) // rejects every line, then meets the end
	}()
	for range 200 {
		if err := st.WriteObject(&jsonrpc2.Request{Method: "tick", Notif: true}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != 400 {
		t.Fatalf("%d lines, want 400", len(got))
	}
	for _, l := range got {
		if l != `{"event":"tick","data":{}}` && l != `{"id":"bad","success":false,"error":"request has no method"}` {
			t.Fatalf("mangled line %q", l)
		}
	}
}

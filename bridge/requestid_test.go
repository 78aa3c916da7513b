package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

func TestParseID(t *testing.T) {
	cases := []struct {
		raw  string
		id   jsonrpc2.ID
		okay bool
	}{
		{`"req_1"`, jsonrpc2.ID{Str: "req_1", IsString: true}, true},
		{`""`, jsonrpc2.ID{IsString: true}, true},
		{`0`, jsonrpc2.ID{Num: 0}, true},
		{`42`, jsonrpc2.ID{Num: 42}, true},
		{`9223372036854775807`, jsonrpc2.ID{Num: 9223372036854775807}, true},
		{`9223372036854775808`, jsonrpc2.ID{}, false},
		{`-1`, jsonrpc2.ID{}, false},
		{`1.5`, jsonrpc2.ID{}, false},
		{`1e3`, jsonrpc2.ID{}, false},
		{`true`, jsonrpc2.ID{}, false},
		{`{}`, jsonrpc2.ID{}, false},
		{`null`, jsonrpc2.ID{}, false},
		{``, jsonrpc2.ID{}, false},
	}
	for _, c := range cases {
		id, ok := parseID(json.RawMessage(c.raw))
		if ok != c.okay || id != c.id {
			t.Errorf("parseID(%s) = %+v, %v; want %+v, %v", c.raw, id, ok, c.id, c.okay)
		}
	}
}

func TestLeadingID(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"id":"a","method":"ping"}`, `"a"`},
		{`{"id":7,"method":"p`, `7`},
		{`{"jsonrpc":"2.0","id":"b","params":{"x":`, `"b"`},
		{`{"method":"ping","params":{"a":[1,{"id":"inner"}]},"id":"outer"}`, `"outer"`},
		{`{"params":{"blob":"unterminated`, ``},
		{`{"method":"ping",,"id":"c"}`, ``},
		{`{"id":null,"method":"ping"}`, ``},
		{`{"id":`, ``},
		{`["id","x"]`, ``},
		{`garbage`, ``},
		{``, ``},
	}
	for _, c := range cases {
		if got := string(leadingID([]byte(c.in))); got != c.want {
			t.Errorf("leadingID(%s) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestTruncateKeepsUTF8(t *testing.T) {
	s := strings.Repeat("é", 40) // 2 bytes each
	for n := range 12 {
		got := truncate(s, n)
		if !utf8.ValidString(got) || len(got) > n+len("…") || !strings.HasSuffix(got, "…") {
			t.Errorf("truncate(%d) = %q", n, got)
		}
	}
	if got := truncate("ab\xffcd", 3); got != "ab\xff…" {
		t.Errorf("bytes that are not UTF-8 are cut like any: %q", got)
	}
	if got := truncate("short", 5); got != "short" {
		t.Errorf("truncate of a short string: %q", got)
	}
}

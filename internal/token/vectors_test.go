package token

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
)

// testdata/vectors.json holds test vectors that this package's tests and
// the TypeScript package's (test/token.test.mjs) both check, so that
// encodeConnectionToken writes byte for byte the tokens Encode writes and
// both decoders accept and refuse the same tokens. go test -run Vectors
// -update-vectors ./internal/token/ rewrites it from the cases below.
var updateVectors = flag.Bool("update-vectors", false, "rewrite testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// vectorToken is a token's content with the TypeScript package's names.
type vectorToken struct {
	HubHost       string `json:"hubHost"`
	HubPort       int    `json:"hubPort"`
	EdgeID        string `json:"edgeId"`
	Secret        string `json:"secret"`
	HubCertSHA256 string `json:"hubCertSha256,omitempty"`
}

func (v vectorToken) token() Token { return Token(v) }

func vectorOf(t Token) vectorToken { return vectorToken(t) }

type vectors struct {
	Comment string `json:"comment"`
	// Encode: what encoding Input gives, and what decoding that gives back
	// (the pin normalized).
	Encode []struct {
		Name    string      `json:"name"`
		Input   vectorToken `json:"input"`
		Token   string      `json:"token"`
		Decoded vectorToken `json:"decoded"`
	} `json:"encode"`
	// Decode: tokens in the other accepted forms.
	Decode []struct {
		Name    string      `json:"name"`
		Token   string      `json:"token"`
		Decoded vectorToken `json:"decoded"`
	} `json:"decode"`
	// Invalid: tokens both decoders refuse, with what the error must say.
	// None of them may show the secret, "hunter2".
	Invalid []struct {
		Name  string `json:"name"`
		Token string `json:"token"`
		Error string `json:"error"`
	} `json:"invalid"`
}

const vectorPin = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// vectorCases are the inputs testdata/vectors.json is written from.
func vectorCases() (enc []vectorToken, dec map[string]string, invalid map[string][2]string) {
	b64 := func(js string) string { return base64.RawURLEncoding.EncodeToString([]byte(js)) }
	std := func(js string) string { return base64.StdEncoding.EncodeToString([]byte(js)) }
	rawStd := func(js string) string { return base64.RawStdEncoding.EncodeToString([]byte(js)) }
	url := func(js string) string { return base64.URLEncoding.EncodeToString([]byte(js)) }
	enc = []vectorToken{
		{HubHost: "hub.example.com", HubPort: 8443, EdgeID: "edge-nyc-01", Secret: "supersecrettoken1"},
		{HubHost: "hub.example.com", HubPort: 443, EdgeID: "edge-nyc-01", Secret: "supersecrettoken1", HubCertSHA256: vectorPin},
		{HubHost: "10.0.0.1", HubPort: 1, EdgeID: "e", Secret: "s", HubCertSHA256: strings.ToUpper(vectorPin)},
		{HubHost: "2001:db8::1", HubPort: 65535, EdgeID: "edge", Secret: "x", HubCertSHA256: colons(vectorPin)},
		{HubHost: "h", HubPort: 8443, EdgeID: "<edge>&", Secret: "a<b>c&d</script>"},
		{HubHost: "hub", HubPort: 8443, EdgeID: "édge-東京-🚀", Secret: "quote\" backslash\\ slash/ \u2028\u2029 tab\t nl\n cr\r bs\b ff\f nul\x00 \x01\x1f\x7f é"},
		{HubHost: "hub", HubPort: 8443, EdgeID: "e", Secret: "???>>>~~~ÿÿÿ"},
		{HubHost: "hub", HubPort: 8443, EdgeID: "e", Secret: strings.Repeat("Zm9v", 40)},
	}
	full := `{"h":"hub","p":8443,"e":"edge","s":"secret?>","f":"` + vectorPin + `"}`
	dec = map[string]string{
		"standard base64 with padding":       std(full),
		"standard base64 without padding":    rawStd(full),
		"base64url with padding":             url(full),
		"white space around":                 " \t" + b64(full) + "\r\n",
		"unknown keys are ignored":           b64(`{"x":[1,{"y":null}],"h":"hub","p":8443,"e":"edge","s":"secret?>","f":"` + vectorPin + `","v":2}`),
		"keys in another order":              b64(`{"f":"` + vectorPin + `","s":"secret?>","e":"edge","p":8443,"h":"hub"}`),
		"a port written as 8443.0":           b64(`{"h":"hub","p":8443.0,"e":"edge","s":"secret?>","f":"` + vectorPin + `"}`),
		"a pin in upper case with colons":    b64(`{"h":"hub","p":8443,"e":"edge","s":"secret?>","f":"` + colons(strings.ToUpper(vectorPin)) + `"}`),
		"a null pin is no pin":               b64(`{"h":"hub","p":8443,"e":"edge","s":"secret?>","f":null}`),
		"an empty pin is no pin":             b64(`{"h":"hub","p":8443,"e":"edge","s":"secret?>","f":""}`),
		"escapes in strings":                 b64(`{"h":"hub","p":8443,"e":"\u0065dge","s":"secret\u003f\u003e"}`),
		"white space inside the JSON":        b64(" {\n \"h\" : \"hub\" , \"p\" : 8443 , \"e\" : \"edge\" , \"s\" : \"secret?>\" }\n"),
		"a duplicate key: the last one wins": b64(`{"h":"other","h":"hub","p":8443,"e":"edge","s":"secret?>"}`),
	}
	invalid = map[string][2]string{
		"empty":                       {"", "empty"},
		"only white space":            {" \n ", "empty"},
		"not base64":                  {"!!!!", "base64"},
		"mixed alphabets":             {b64(full)[:8] + "-+" + b64(full)[10:], "base64"},
		"bad padding":                 {rawStd(full) + "===", "base64"},
		"base64 of no JSON":           {b64(`hunter2`), "JSON"},
		"a JSON array":                {b64(`["hunter2"]`), "JSON object"},
		"JSON null":                   {b64(`null`), "JSON object"},
		"a JSON string":               {b64(`"hunter2"`), "JSON object"},
		"two JSON values":             {b64(`{"h":"h","p":1,"e":"e","s":"hunter2"} {}`), "JSON"},
		"no hub host":                 {b64(`{"p":1,"e":"e","s":"hunter2"}`), `"h"`},
		"an empty hub host":           {b64(`{"h":"","p":1,"e":"e","s":"hunter2"}`), `"h"`},
		"a hub host that is a number": {b64(`{"h":1,"p":1,"e":"e","s":"hunter2"}`), `"h"`},
		"no port":                     {b64(`{"h":"h","e":"e","s":"hunter2"}`), `"p"`},
		"a port that is a string":     {b64(`{"h":"h","p":"8443","e":"e","s":"hunter2"}`), `"p"`},
		"a port that is a fraction":   {b64(`{"h":"h","p":1.5,"e":"e","s":"hunter2"}`), `"p"`},
		"port 0":                      {b64(`{"h":"h","p":0,"e":"e","s":"hunter2"}`), "1-65535"},
		"port 65536":                  {b64(`{"h":"h","p":65536,"e":"e","s":"hunter2"}`), "1-65535"},
		"a negative port":             {b64(`{"h":"h","p":-443,"e":"e","s":"hunter2"}`), "1-65535"},
		"no edge id":                  {b64(`{"h":"h","p":1,"s":"hunter2"}`), `"e"`},
		"an edge id that is a list":   {b64(`{"h":"h","p":1,"e":["e"],"s":"hunter2"}`), `"e"`},
		"no secret":                   {b64(`{"h":"h","p":1,"e":"e"}`), `"s"`},
		"an empty secret":             {b64(`{"h":"h","p":1,"e":"e","s":""}`), `"s"`},
		"a secret that is an object":  {b64(`{"h":"h","p":1,"e":"e","s":{"v":"hunter2"}}`), `"s"`},
		"a short pin":                 {b64(`{"h":"h","p":1,"e":"e","s":"hunter2","f":"` + vectorPin[:62] + `"}`), `"f"`},
		"a pin that is not hex":       {b64(`{"h":"h","p":1,"e":"e","s":"hunter2","f":"` + strings.Repeat("zz", 32) + `"}`), `"f"`},
		"a pin that is a number":      {b64(`{"h":"h","p":1,"e":"e","s":"hunter2","f":12}`), `"f"`},
	}
	return enc, dec, invalid
}

// encodeNames name the cases of vectorCases' enc, in order.
var encodeNames = []string{
	"the README's example", "with a pin", "a pin in upper case is written in lower case",
	"a pin with colons is written without them; an IPv6 hub", "HTML characters are escaped as Go escapes them",
	"quotes, backslashes, control characters, U+2028/U+2029 and non-ASCII", "characters whose base64 differs in the two alphabets",
	"a long secret",
}

// colons writes a hex string the way certificate tools print it: AB:CD:...
func colons(h string) string {
	var parts []string
	for i := 0; i+2 <= len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func writeVectors(t *testing.T) {
	enc, dec, invalid := vectorCases()
	var v vectors
	v.Comment = "Connection token test vectors, checked by internal/token (Go) and test/token.test.mjs (TypeScript). " +
		"Regenerate: go test -run Vectors -update-vectors ./internal/token/"
	for i, in := range enc {
		s, err := Encode(in.token())
		if err != nil {
			t.Fatal(err)
		}
		out, err := Decode(s)
		if err != nil {
			t.Fatal(err)
		}
		v.Encode = append(v.Encode, struct {
			Name    string      `json:"name"`
			Input   vectorToken `json:"input"`
			Token   string      `json:"token"`
			Decoded vectorToken `json:"decoded"`
		}{Name: encodeNames[i], Input: in, Token: s, Decoded: vectorOf(out)})
	}
	for _, name := range slices.Sorted(maps.Keys(dec)) {
		out, err := Decode(dec[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v.Decode = append(v.Decode, struct {
			Name    string      `json:"name"`
			Token   string      `json:"token"`
			Decoded vectorToken `json:"decoded"`
		}{Name: name, Token: dec[name], Decoded: vectorOf(out)})
	}
	for _, name := range slices.Sorted(maps.Keys(invalid)) {
		v.Invalid = append(v.Invalid, struct {
			Name  string `json:"name"`
			Token string `json:"token"`
			Error string `json:"error"`
		}{Name: name, Token: invalid[name][0], Error: invalid[name][1]})
	}
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetIndent("", "  ")
	if err := e.Encode(v); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVectors(t *testing.T) {
	if *updateVectors {
		writeVectors(t)
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Encode) < 8 || len(v.Decode) < 10 || len(v.Invalid) < 20 {
		t.Fatalf("%s holds %d/%d/%d vectors: too few", vectorsFile, len(v.Encode), len(v.Decode), len(v.Invalid))
	}
	for _, c := range v.Encode {
		s, err := Encode(c.Input.token())
		if err != nil || s != c.Token {
			t.Errorf("%s: Encode = %q, %v; want %q", c.Name, s, err, c.Token)
		}
		got, err := Decode(c.Token)
		if err != nil || got != c.Decoded.token() {
			t.Errorf("%s: Decode = %v, %v; want %v", c.Name, got, err, c.Decoded.token())
		}
	}
	for _, c := range v.Decode {
		got, err := Decode(c.Token)
		if err != nil || got != c.Decoded.token() {
			t.Errorf("%s: Decode = %v, %v; want %v", c.Name, got, err, c.Decoded.token())
		}
	}
	for _, c := range v.Invalid {
		_, err := Decode(c.Token)
		if err == nil || !strings.Contains(err.Error(), c.Error) {
			t.Errorf("%s: Decode error %v, want it to say %q", c.Name, err, c.Error)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error %q shows the secret", c.Name, err)
		}
	}
}

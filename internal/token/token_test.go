package token

import (
	"encoding/base64"
	"strings"
	"testing"
)

const pin = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestRoundTrip(t *testing.T) {
	for _, tok := range []Token{
		{HubHost: "hub.example.com", HubPort: 8443, EdgeID: "edge-nyc-01", Secret: "s3cr3t"},
		{HubHost: "10.0.0.1", HubPort: 1, EdgeID: "e", Secret: "x", HubCertSHA256: pin},
	} {
		s, err := Encode(tok)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(s, "=+/") {
			t.Errorf("token %q is not unpadded base64url", s)
		}
		got, err := Decode(s)
		if err != nil || got != tok {
			t.Errorf("Decode(Encode(%v)) = %v, %v", tok, got, err)
		}
	}
}

// The JSON is compact and has exactly the contract's keys.
func TestWireFormat(t *testing.T) {
	s, err := Encode(Token{HubHost: "h", HubPort: 2, EdgeID: "e", Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := base64.RawURLEncoding.DecodeString(s)
	if string(b) != `{"h":"h","p":2,"e":"e","s":"s"}` {
		t.Fatalf("JSON %s", b)
	}
	s, _ = Encode(Token{HubHost: "h", HubPort: 2, EdgeID: "e", Secret: "s", HubCertSHA256: strings.ToUpper(pin)})
	b, _ = base64.RawURLEncoding.DecodeString(s)
	if string(b) != `{"h":"h","p":2,"e":"e","s":"s","f":"`+pin+`"}` {
		t.Fatalf("JSON %s", b)
	}
}

func TestDecodeAcceptsStandardBase64AndUnknownKeys(t *testing.T) {
	js := `{"h":"hub","p":443,"e":"edge","s":"??>>secret","f":"` + pin + `","x":[1,{"y":2}]}`
	want := Token{HubHost: "hub", HubPort: 443, EdgeID: "edge", Secret: "??>>secret", HubCertSHA256: pin}
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		got, err := Decode(" " + enc.EncodeToString([]byte(js)) + "\n")
		if err != nil || got != want {
			t.Errorf("%v: %v, %v", enc, got, err)
		}
	}
}

func TestDecodeErrorsSayWhatIsWrongWithoutTheSecret(t *testing.T) {
	enc := func(js string) string { return base64.RawURLEncoding.EncodeToString([]byte(js)) }
	for tok, want := range map[string]string{
		"":                                     "empty",
		"!!!":                                  "not base64",
		enc(`[1]`):                             "JSON object",
		enc(`{"h":"h","p":1,"e":"e"} {}`):      "more than one",
		enc(`{"p":1,"e":"e","s":"hunter2"}`):   `no hub host ("h")`,
		enc(`{"h":"h","e":"e","s":"hunter2"}`): `hub port ("p")`,
		enc(`{"h":"h","p":"1","e":"e","s":"hunter2"}`):         `"p" (hub port) must be an integer`,
		enc(`{"h":"h","p":70000,"e":"e","s":"hunter2"}`):       `1-65535`,
		enc(`{"h":"h","p":1,"s":"hunter2"}`):                   `no edge id`,
		enc(`{"h":"h","p":1,"e":"e"}`):                         `no secret`,
		enc(`{"h":"h","p":1,"e":"e","s":7}`):                   `"s" (secret) must be a string`,
		enc(`{"h":"h","p":1,"e":"e","s":"hunter2","f":"abc"}`): `certificate pin`,
	} {
		_, err := Decode(tok)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%q) = %v, want it to say %q", tok, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q shows the secret", err)
		}
	}
}

func TestStringHidesTheSecret(t *testing.T) {
	tok := Token{HubHost: "h", HubPort: 1, EdgeID: "e", Secret: "hunter2"}
	if strings.Contains(tok.String(), "hunter2") {
		t.Fatal(tok.String())
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Encode(Token{HubHost: "hub", HubPort: 8443, EdgeID: "e", Secret: "s", HubCertSHA256: pin})
	f.Add(good)
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"h":"a","p":1,"e":"b","s":"c"}`)))
	f.Add("")
	f.Add("e30")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Decode(s)
		if err != nil {
			return
		}
		if tok.Check() != nil {
			t.Fatalf("Decode accepted a token Check refuses: %v", tok)
		}
		again, err := Encode(tok)
		if err != nil {
			t.Fatalf("Encode of a decoded token: %v", err)
		}
		back, err := Decode(again)
		if err != nil || back != tok {
			t.Fatalf("round trip: %v, %v != %v", back, err, tok)
		}
	})
}

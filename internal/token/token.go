// Package token encodes and decodes connection tokens (CONTRACT section 8):
// the base64url encoding, without padding, of compact JSON
// {"h":hubHost,"p":hubPort,"e":edgeId,"s":secret} with an optional "f", the
// hub certificate's SHA-256 as lowercase hex. Decode also accepts standard
// base64 with or without padding, and ignores unknown keys.
//
// A token holds a secret: neither a Token nor an error of this package ever
// shows it.
package token

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Token is what a connection token carries.
type Token struct {
	HubHost string
	HubPort int
	EdgeID  string
	Secret  string
	// HubCertSHA256 is the hub certificate's SHA-256, lowercase hex, or "".
	HubCertSHA256 string
}

// String never shows the secret.
func (t Token) String() string {
	return fmt.Sprintf("Token{hub=%s:%d edgeId=%s}", t.HubHost, t.HubPort, t.EdgeID)
}

// wire is the JSON of a token.
type wire struct {
	H string `json:"h"`
	P int    `json:"p"`
	E string `json:"e"`
	S string `json:"s"`
	F string `json:"f,omitempty"`
}

// Encode returns t as a token. It checks t first (see Check).
func Encode(t Token) (string, error) {
	t.HubCertSHA256 = NormalizeFingerprint(t.HubCertSHA256)
	if err := t.Check(); err != nil {
		return "", err
	}
	b, err := json.Marshal(wire{H: t.HubHost, P: t.HubPort, E: t.EdgeID, S: t.Secret, F: t.HubCertSHA256})
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// maxLen bounds a token's length: a token is a few hundred bytes.
const maxLen = 64 << 10

// Decode parses a token. White space around it is ignored. The error says
// what is wrong, never what the token holds.
func Decode(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("token is empty")
	}
	if len(s) > maxLen {
		return Token{}, fmt.Errorf("token is longer than %d bytes", maxLen)
	}
	b, err := decodeBase64(s)
	if err != nil {
		return Token{}, errors.New("token is not base64url (or base64)")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw map[string]json.RawMessage
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return Token{}, errors.New("token does not hold a JSON object")
	}
	if dec.More() {
		return Token{}, errors.New("token holds more than one JSON value")
	}
	var t Token
	fields := []struct {
		key  string
		dst  *string
		what string
	}{{"h", &t.HubHost, "hub host"}, {"e", &t.EdgeID, "edge id"}, {"s", &t.Secret, "secret"}, {"f", &t.HubCertSHA256, "certificate pin"}}
	for _, f := range fields {
		v, ok := raw[f.key]
		if !ok || string(v) == "null" {
			continue
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return Token{}, fmt.Errorf("token field %q (%s) must be a string", f.key, f.what)
		}
	}
	if v, ok := raw["p"]; ok && string(v) != "null" {
		var p float64
		if err := json.Unmarshal(v, &p); err != nil || p != float64(int(p)) {
			return Token{}, errors.New(`token field "p" (hub port) must be an integer`)
		}
		t.HubPort = int(p)
	}
	t.HubCertSHA256 = NormalizeFingerprint(t.HubCertSHA256)
	if err := t.Check(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// Check says what a token lacks: every field but the pin is required, the
// port is 1-65535, and the pin, when given, is 32 bytes of hex.
func (t Token) Check() error {
	switch {
	case t.HubHost == "":
		return errors.New(`token has no hub host ("h")`)
	case t.HubPort < 1 || t.HubPort > 65535:
		return errors.New(`token hub port ("p") must be an integer 1-65535`)
	case t.EdgeID == "":
		return errors.New(`token has no edge id ("e")`)
	case t.Secret == "":
		return errors.New(`token has no secret ("s")`)
	}
	if t.HubCertSHA256 != "" {
		if b, err := hex.DecodeString(t.HubCertSHA256); err != nil || len(b) != 32 {
			return errors.New(`token certificate pin ("f") must be a SHA-256 in hex (64 digits)`)
		}
	}
	return nil
}

// decodeBase64 accepts base64url and standard base64, each with or without padding.
func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// NormalizeFingerprint lowercases a hex fingerprint and drops the colons
// that certificate tools print between its bytes.
func NormalizeFingerprint(f string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(f), ":", ""))
}

package params

import (
	"encoding/json"
	"strings"

	"github.com/serve-zone/remoteingress/internal/token"
)

// Connection tokens (internal/token) in params: the startEdge param token,
// which stands for hubHost, hubPort, edgeId, secret and a certificate pin,
// and the params of the hub's createConnectionToken.

// TokenParam is the startEdge param that holds a connection token. It is
// not a field of StartEdge: a standalone config file, whose keys are
// StartEdge's names, gives a token only through tokenFile or the
// environment, never inline, since a token holds a secret.
const TokenParam = "token"

// TokenKeys are the startEdge params a connection token gives; none of
// them may be given beside one.
var TokenKeys = []string{"hubHost", "hubPort", "edgeId", "secret", "hubs"}

// TokenConflict returns an error naming the first of keys that obj gives
// (with a value other than null) beside a token, or nil; with says what
// gives the token ("token", "a token (tokenFile)").
func TokenConflict(obj Object, keys []string, with string) *Error {
	for _, k := range keys {
		if _, ok := obj.value(k); ok {
			return &Error{Param: k, Msg: "cannot be given with " + with + ": the token gives the hub, the edge id and the secret"}
		}
	}
	return nil
}

// ApplyToken stores what tok gives into obj as the startEdge params it
// stands for: hubHost, hubPort, edgeId, secret, and hubCertSha256 when the
// token carries a certificate pin. A hubCertSha256 in obj that differs from
// that pin is an error; from says where the token came from. The caller
// has checked that obj gives none of TokenKeys (TokenConflict).
func ApplyToken(obj Object, tok token.Token, from string) *Error {
	if tok.HubCertSHA256 != "" {
		if raw, ok := obj.value("hubCertSha256"); ok {
			var pinned string
			if err := json.Unmarshal(raw, &pinned); err != nil {
				return &Error{Param: "hubCertSha256", Msg: "must be a string"}
			}
			if pinned != "" && token.NormalizeFingerprint(pinned) != tok.HubCertSHA256 {
				return &Error{Param: "hubCertSha256", Msg: "differs from the certificate pin of the token (" + from + ")"}
			}
		}
		obj["hubCertSha256"], _ = json.Marshal(tok.HubCertSHA256)
	}
	if hubs := strings.Split(tok.HubHost, ","); len(hubs) > 1 {
		// Several hubs (CONTRACT section 12): "p" is the port of an entry
		// that has none.
		for i := range hubs {
			hubs[i] = strings.TrimSpace(hubs[i])
		}
		obj["hubs"], _ = json.Marshal(hubs)
	} else {
		obj["hubHost"], _ = json.Marshal(tok.HubHost)
	}
	obj["hubPort"], _ = json.Marshal(tok.HubPort)
	obj["edgeId"], _ = json.Marshal(tok.EdgeID)
	obj["secret"], _ = json.Marshal(tok.Secret)
	return nil
}

// ExpandToken replaces the token param of startEdge params obj, when it
// is given, by the params the token stands for (ApplyToken), so that
// StartEdge decodes them as if they had been given one by one. With a
// token none of TokenKeys may be given. Without one obj is left alone. No
// error shows the token or anything it holds.
func ExpandToken(obj Object) error {
	raw, ok := obj.value(TokenParam)
	if !ok {
		return nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return &Error{Param: TokenParam, Msg: "must be a string"}
	}
	if err := TokenConflict(obj, TokenKeys, TokenParam); err != nil {
		return err
	}
	tok, err := token.Decode(text)
	if err != nil {
		// The errors of token.Decode start with "token" and say what is
		// wrong, never what the token holds.
		return &Error{Param: TokenParam, Msg: strings.TrimPrefix(err.Error(), "token ")}
	}
	delete(obj, TokenParam)
	if err := ApplyToken(obj, tok, TokenParam); err != nil {
		return err
	}
	return nil
}

// ConnectionTokenRequest is the params of createConnectionToken.
type ConnectionTokenRequest struct {
	// EdgeID is the allowed edge the token is for.
	EdgeID string
	// HubHost is the hub's address as the edge will dial it.
	HubHost string
	// HubPort is the port the token names; 0 when not given (the hub's
	// tunnel port).
	HubPort int
}

// CreateConnectionToken is the params of createConnectionToken.
var CreateConnectionToken = Schema[ConnectionTokenRequest]{Fields: []Field[ConnectionTokenRequest]{
	String("edgeId", "EdgeID", true, func(c *ConnectionTokenRequest) *string { return &c.EdgeID }),
	String("hubHost", "HubHost", true, func(c *ConnectionTokenRequest) *string { return &c.HubHost }),
	Int("hubPort", "HubPort", func(c *ConnectionTokenRequest) *int { return &c.HubPort }),
}}

// DecodeConnectionTokenRequest decodes and checks the params of
// createConnectionToken: edgeId and hubHost non-empty strings, hubPort,
// when given, an integer 1-65535.
func DecodeConnectionTokenRequest(obj Object) (ConnectionTokenRequest, error) {
	var r ConnectionTokenRequest
	if err := CreateConnectionToken.Decode(obj, &r); err != nil {
		return r, err
	}
	_, portGiven := obj.value("hubPort")
	switch {
	case r.EdgeID == "":
		return r, &Error{Param: "edgeId", Msg: "must not be empty"}
	case r.HubHost == "":
		return r, &Error{Param: "hubHost", Msg: "must not be empty"}
	case portGiven && (r.HubPort < 1 || r.HubPort > 65535):
		return r, &Error{Param: "hubPort", Msg: "must be an integer 1-65535"}
	}
	return r, nil
}

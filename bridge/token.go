package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/serve-zone/remoteingress/internal/params"
	"github.com/serve-zone/remoteingress/internal/token"
	"github.com/serve-zone/remoteingress/tunnel"
)

// tokenResult is the result of createConnectionToken. The token holds the
// edge's secret: it goes into this result and nowhere else (no log line,
// event, status or error).
type tokenResult struct {
	Token string `json:"token"`
}

// createConnectionToken returns a connection token for an allowed edge:
// edgeId, hubHost, hubPort? (default: the running hub's tunnel port). The
// token carries the edge's secret and the running hub's certificate pin.
func (s *server) createConnectionToken(raw *json.RawMessage) (any, error) {
	obj, err := params.Parse(raw)
	var req params.ConnectionTokenRequest
	if err == nil {
		req, err = params.DecodeConnectionTokenRequest(obj)
	}
	if err != nil {
		return nil, invalidParams("createConnectionToken: %v", err)
	}
	tok, err := s.hub.connectionToken(req)
	if err != nil {
		return nil, fmt.Errorf("createConnectionToken: %w", err)
	}
	return tokenResult{Token: tok}, nil
}

// errHubNotRunning answers createConnectionToken while no hub runs.
var errHubNotRunning = errors.New("hub is not running (a token carries the running hub's port and certificate pin)")

// connectionToken encodes the token of an allowed edge for the running
// hub: its secret from the allow list, the hub's certificate pin, and
// req.HubPort or else the hub's tunnel port.
func (r *hubRole) connectionToken(req params.ConnectionTokenRequest) (string, error) {
	r.op.Lock()
	defer r.op.Unlock()
	h, ok := r.current()
	if !ok {
		return "", errHubNotRunning
	}
	i := slices.IndexFunc(r.allowed, func(e tunnel.EdgeCredential) bool { return e.ID == req.EdgeID })
	if i < 0 {
		return "", fmt.Errorf("edge %q is not in the allowed list", truncate(req.EdgeID, 100))
	}
	port := req.HubPort
	if port == 0 {
		port = h.Port()
	}
	return token.Encode(token.Token{HubHost: req.HubHost, HubPort: port, EdgeID: req.EdgeID,
		Secret: r.allowed[i].Secret, HubCertSHA256: h.Status().CertSha256})
}

package bridge

import (
	"encoding/json"

	"github.com/serve-zone/remoteingress/internal/params"
	"github.com/serve-zone/remoteingress/tunnel"
)

// The params of each method are defined once, in package params (names,
// JSON types, required or not, the engine field each sets), and shared with
// the standalone config loader. Here they only become the method's answer.

// decodeParams decodes raw into cfg, which holds the engine's defaults, by
// the method's schema. A problem is a -32602 error naming the method and
// the param. Unknown params are ignored.
func decodeParams[C any](method string, schema params.Schema[C], raw *json.RawMessage, cfg *C) error {
	obj, err := params.Parse(raw)
	if err == nil {
		err = schema.Decode(obj, cfg)
	}
	if err != nil {
		return invalidParams("%s: %v", method, err)
	}
	return nil
}

// decodeEdgeParams decodes the params of startEdge into cfg, which holds
// the engine's defaults: a token param is first replaced by the params it
// stands for (params.ExpandToken), then params.StartEdge decodes them.
func decodeEdgeParams(raw *json.RawMessage, cfg *tunnel.EdgeConfig) error {
	obj, err := params.Parse(raw)
	if err == nil {
		err = params.ExpandToken(obj)
	}
	if err == nil {
		err = params.StartEdge.Decode(obj, cfg)
	}
	if err != nil {
		return invalidParams("startEdge: %v", err)
	}
	return nil
}

// checkConfig turns the engine's verdict on a config into the method's
// answer: a *tunnel.ConfigError becomes a -32602 error naming the param;
// other errors pass through.
func checkConfig(method string, err error) error {
	if pe, ok := params.FromConfigError(err); ok {
		return invalidParams("%s: %v", method, pe)
	}
	return err
}

// intValue parses a JSON number that is an integer (params.IntValue).
func intValue(raw json.RawMessage) (int, bool) { return params.IntValue(raw) }

package bridge

import (
	"bytes"
	"encoding/json"
)

// codec is what differs between the dialects on the wire.
type codec interface {
	// request turns an input line into a JSON-RPC 2.0 request (hasID: it
	// expects an answer) with its params in store, or rejects it.
	request(data []byte, store *paramStore) (req []byte, hasID bool, rej *rejection)
	// encode turns a JSON-RPC 2.0 message written by the Conn (a response or
	// a notification), msg as encoded and m as decoded, into an output line.
	encode(msg []byte, m *wireMessage) ([]byte, error)
	// reject renders the answer to a rejected line, or nil when none is due.
	reject(r *rejection) []byte
}

// newCodec returns the codec of dialect d.
func newCodec(d Dialect) codec {
	if d == JSONRPC {
		return jsonrpcCodec{}
	}
	return managementCodec{}
}

// wireMessage is a JSON-RPC 2.0 message as the Conn writes it.
type wireMessage struct {
	ID     json.RawMessage `json:"id"`
	Method *string         `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// emptyObject is the data of an event without data.
var emptyObject = json.RawMessage(`{}`)

// answerID renders the raw id of a rejected line for its answer. The raw id
// is JSON taken from the input, so bytes that are not UTF-8 can only be in
// its strings; they become U+FFFD, as they would in a decoded id, and the
// output stays valid UTF-8.
func answerID(raw json.RawMessage) json.RawMessage {
	return bytes.ToValidUTF8(raw, []byte("\uFFFD"))
}

package bridge

import (
	"encoding/json"
)

// jsonrpcCodec speaks plain JSON-RPC 2.0, one object per line.
type jsonrpcCodec struct{}

// jsonrpcErrorResponse is an error response written for a rejected line.
type jsonrpcErrorResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   jsonrpcError    `json:"error"`
}

// jsonrpcError is a JSON-RPC 2.0 error object.
type jsonrpcError struct {
	Code    int64  `json:"code"`
	Message string `json:"message"`
}

// request implements codec; requests without an id are notifications.
func (jsonrpcCodec) request(data []byte, store *paramStore) ([]byte, bool, *rejection) {
	return parseRequest(data, true, false, store)
}

// encode implements codec: the Conn already writes JSON-RPC 2.0.
func (jsonrpcCodec) encode(msg []byte, m *wireMessage) ([]byte, error) {
	return msg, nil
}

// reject implements codec: every rejected line is answered, with a null id
// when none could be recovered.
func (jsonrpcCodec) reject(r *rejection) []byte {
	id := json.RawMessage("null")
	if r.id != nil && r.idValid {
		id = answerID(r.id)
	}
	return mustMarshal(jsonrpcErrorResponse{
		JSONRPC: "2.0",
		ID:      id,
		Error:   jsonrpcError{Code: r.code, Message: r.message},
	})
}

package bridge

import (
	"encoding/json"
)

// managementCodec speaks RustBridge's dialect: requests {"id","method","params"},
// answers {"id","success","result"|"error"}, events {"event","data"}.
type managementCodec struct{}

// managementSuccess is a successful answer.
type managementSuccess struct {
	ID      json.RawMessage `json:"id"`
	Success bool            `json:"success"`
	Result  json.RawMessage `json:"result"`
}

// managementFailure is a failed answer.
type managementFailure struct {
	ID      json.RawMessage `json:"id"`
	Success bool            `json:"success"`
	Error   string          `json:"error"`
}

// managementEvent is an event line.
type managementEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// request implements codec; a request without an id cannot be answered and is rejected.
func (managementCodec) request(data []byte, store *paramStore) ([]byte, bool, *rejection) {
	return parseRequest(data, false, true, store)
}

// encode implements codec.
func (managementCodec) encode(msg []byte, m *wireMessage) ([]byte, error) {
	switch {
	case m.Method != nil:
		data := m.Params
		if isNull(data) {
			data = emptyObject
		}
		return json.Marshal(managementEvent{Event: *m.Method, Data: data})
	case m.Error != nil:
		return json.Marshal(managementFailure{ID: m.ID, Error: m.Error.Message})
	default:
		result := m.Result
		if len(result) == 0 {
			result = json.RawMessage("null")
		}
		return json.Marshal(managementSuccess{ID: m.ID, Success: true, Result: result})
	}
}

// reject implements codec: only a line with an id gets an answer.
func (managementCodec) reject(r *rejection) []byte {
	if r.id == nil {
		return nil
	}
	return mustMarshal(managementFailure{ID: answerID(r.id), Error: r.message})
}

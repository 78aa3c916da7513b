package bridge

import (
	"encoding/json"
	"sync"

	"github.com/sourcegraph/jsonrpc2"
)

// paramStore carries request params beside the jsonrpc2.Conn instead of
// through it: the Conn decodes params generically and encodes them again,
// which for a 50 MiB line costs seconds and hundreds of MiB. The stream puts
// the params here and sends the Conn a request whose meta holds a reference;
// the handler takes them back out. Every request read reaches the handler,
// so every entry is taken.
type paramStore struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]json.RawMessage
}

// paramsMeta is the meta of a request whose params are in a paramStore.
type paramsMeta struct {
	ParamsRef *uint64 `json:"paramsRef"`
}

// put stores raw and returns its reference.
func (p *paramStore) put(raw json.RawMessage) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[uint64]json.RawMessage)
	}
	p.next++
	p.m[p.next] = raw
	return p.next
}

// take returns the params of req: those stored for it (removing them), or
// else its own.
func (p *paramStore) take(req *jsonrpc2.Request) *json.RawMessage {
	var meta paramsMeta
	if req.Meta == nil || json.Unmarshal(*req.Meta, &meta) != nil || meta.ParamsRef == nil {
		return req.Params
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	raw, ok := p.m[*meta.ParamsRef]
	if !ok {
		return nil
	}
	delete(p.m, *meta.ParamsRef)
	return &raw
}

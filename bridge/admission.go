package bridge

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/sourcegraph/jsonrpc2"
)

// class sorts requests for admission. Quick requests (ping, the status
// requests, unknown methods) have slots of their own, so that they are
// answered while slow ones (starts and stops) take all of theirs.
type class int

const (
	slowClass class = iota
	quickClass
	classes
)

// admission bounds the requests being handled at once: at most slots of
// each class, holding at most budget bytes between them (a request bigger
// than the budget is admitted alone). Waiting for admission holds up the
// reading of the input, so that a parent writing faster than requests are
// answered fills the pipe and waits, instead of growing this process's memory.
type admission struct {
	slots  int
	budget int64

	mu     sync.Mutex
	cond   *sync.Cond
	used   [classes]int // requests admitted, not yet released
	bytes  int64        // their weight
	closed bool
}

// newAdmission returns an admission of slots requests of each class and budget bytes.
func newAdmission(slots int, budget int64) *admission {
	a := &admission{slots: slots, budget: budget}
	a.cond = sync.NewCond(&a.mu)
	return a
}

// acquire waits until a request of class c and weight n fits and admits it.
// It returns false, admitting nothing, once close was called.
func (a *admission) acquire(c class, n int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for !a.closed && (a.used[c] >= a.slots || (a.inFlight() > 0 && a.bytes+n > a.budget)) {
		a.cond.Wait()
	}
	if a.closed {
		return false
	}
	a.used[c]++
	a.bytes += n
	return true
}

// inFlight is the number of requests admitted; a.mu is held.
func (a *admission) inFlight() int {
	n := 0
	for _, u := range a.used {
		n += u
	}
	return n
}

// release ends a request of class c admitted with weight n.
func (a *admission) release(c class, n int64) {
	a.mu.Lock()
	a.used[c]--
	a.bytes -= n
	a.mu.Unlock()
	a.cond.Broadcast()
}

// close makes every acquire, waiting or later, return false.
func (a *admission) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cond.Broadcast()
}

// boundedHandler is the jsonrpc2.Handler of Run: each request runs on its own
// goroutine, so a slow start never holds up ping or a status request, but
// only once admitted. The Conn reads the next request only after Handle
// returns, so while the slots of a request's class are taken the input is
// not read.
type boundedHandler struct {
	srv *server
	adm *admission
}

// Handle implements jsonrpc2.Handler.
func (h boundedHandler) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	params := h.srv.params.take(req)
	c := slowClass
	if h.srv.quick(req.Method) {
		c, params = quickClass, nil // quick methods ignore their params
	}
	n := requestWeight(req, params)
	if !h.adm.acquire(c, n) {
		return // the session is over
	}
	go func() {
		defer h.adm.release(c, n)
		h.srv.serve(ctx, conn, req, params)
	}()
}

// requestWeight is the memory a request holds while it is handled, roughly:
// the bytes of its method, id and params.
func requestWeight(req *jsonrpc2.Request, params *json.RawMessage) int64 {
	n := int64(len(req.Method) + len(req.ID.Str))
	if params != nil {
		n += int64(len(*params))
	}
	return n
}

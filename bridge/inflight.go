package bridge

import (
	"sync"
	"time"
)

// answerGrace bounds how long the end of input waits for requests already
// read to be answered before the connection closes.
const answerGrace = time.Second

// inflight counts requests read but not yet answered, so that the end of
// input does not cut off their answers (`echo '{...}' | remoteingress-bin`).
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while n is 0
}

// add counts one more request awaiting its answer.
func (f *inflight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.n == 1 {
		f.idle = make(chan struct{})
	}
}

// done counts one answer written (or failed to write).
func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return
	}
	f.n--
	if f.n == 0 {
		close(f.idle)
		f.idle = nil
	}
}

// wait returns once every counted request is answered, or after timeout.
func (f *inflight) wait(timeout time.Duration) {
	f.mu.Lock()
	idle := f.idle
	f.mu.Unlock()
	if idle == nil {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

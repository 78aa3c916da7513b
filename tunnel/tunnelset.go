package tunnel

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// tunnelSet is the edge's side of a TunnelSet: the connections it spreads
// new streams over, round-robin. They live and die together: when one ends,
// the others are closed, and the edge reconnects with a new set.
type tunnelSet struct {
	sessions []*session
	next     atomic.Uint32
}

// newSetID returns a random set id.
func newSetID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// pick returns the connection for the next stream.
func (t *tunnelSet) pick() *session {
	if len(t.sessions) == 1 {
		return t.sessions[0]
	}
	return t.sessions[int(t.next.Add(1)-1)%len(t.sessions)]
}

func (t *tunnelSet) activeStreams() int {
	n := 0
	for _, s := range t.sessions {
		n += s.activeStreams()
	}
	return n
}

func (t *tunnelSet) close(err error) {
	for _, s := range t.sessions {
		s.close(err)
	}
}

// run serves every connection until the first one ends, closes the others
// and returns, once all have ended, why the first one ended.
func (t *tunnelSet) run() error {
	if len(t.sessions) == 1 {
		return t.sessions[0].run()
	}
	reasons := make(chan error, len(t.sessions))
	var wg sync.WaitGroup
	for _, s := range t.sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reasons <- s.run()
		}()
	}
	first := <-reasons
	t.close(&LocalCloseError{Reason: fmt.Sprintf("another connection of the tunnel ended: %v", first)})
	wg.Wait()
	return first
}

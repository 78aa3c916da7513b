package tunnel

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// edgeConns is the edge's side of a setPlace: the connections it spreads
// new streams over, round-robin. They live and die together: when one ends,
// the others are closed, and the edge reconnects with a new set.
type edgeConns struct {
	conns     []tunnelConn
	transport string // TransportTLS or TransportQUIC
	next      atomic.Uint32
}

// newSetID returns a random set id.
func newSetID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// pick returns the connection for the next stream.
func (t *edgeConns) pick() tunnelConn {
	if len(t.conns) == 1 {
		return t.conns[0]
	}
	return t.conns[int(t.next.Add(1)-1)%len(t.conns)]
}

func (t *edgeConns) activeStreams() int {
	n := 0
	for _, c := range t.conns {
		n += c.ActiveStreams()
	}
	return n
}

func (t *edgeConns) close(reason string) {
	for _, c := range t.conns {
		c.Close(reason)
	}
}

// run serves every connection until the first one ends, closes the others
// and returns, once all have ended, why the first one ended. first, if not
// nil, handles the hub's messages on the connection of index 0, others on
// the other connections; flows, if not nil, gives each connection the
// handler of the hub's flow frames.
func (t *edgeConns) run(first, others *streamHandler, flows func(c tunnelConn) *flowHandler) error {
	handlers := make([]*streamHandler, len(t.conns))
	for i, c := range t.conns {
		h := others
		if i == 0 {
			h = first
		}
		if h != nil {
			one := *h
			handlers[i] = &one
		}
		if flows != nil {
			if handlers[i] == nil {
				handlers[i] = &streamHandler{}
			}
			handlers[i].flows = flows(c)
		}
	}
	if len(t.conns) == 1 {
		return t.conns[0].Serve(handlers[0])
	}
	reasons := make(chan error, len(t.conns))
	var wg sync.WaitGroup
	for i, c := range t.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reasons <- c.Serve(handlers[i])
		}()
	}
	why := <-reasons
	t.close(fmt.Sprintf("another connection of the tunnel ended: %v", why))
	wg.Wait()
	return why
}

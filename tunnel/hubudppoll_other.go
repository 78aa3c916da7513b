//go:build !linux

package tunnel

// flowPoller is absent here: each flow has a reader goroutine (readReplies).
type flowPoller struct{}

func newFlowPoller(h *Hub) *flowPoller    { return &flowPoller{} }
func (p *flowPoller) watch(*hubFlow) bool { return false }
func (p *flowPoller) unwatch(*hubFlow)    {}
func (p *flowPoller) close()              {}

//go:build !linux

package tunnel

// idlePoller is Linux's (hibernate_linux.go); elsewhere streams never
// hibernate and keep their upstream goroutine while idle.
type idlePoller struct{}

func newIdlePoller(*session) *idlePoller    { return nil }
func (p *idlePoller) add(int, *stream) bool { return false }
func (p *idlePoller) remove(int, *stream)   {}
func (p *idlePoller) close()                {}

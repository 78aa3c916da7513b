package tunnel

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// idlePoller watches the sockets of a session's hibernating streams (see
// stream.hibernate): one epoll set and, while any stream hibernates, one
// goroutine for the whole session, where every idle stream would otherwise
// keep a goroutine of its own with a stack grown by its last write through
// TLS. A stream whose socket becomes readable (data, FIN or reset) is woken:
// its upstream goroutine starts again.
type idlePoller struct {
	s    *session
	ep   *os.File        // the epoll set, waited on through Go's own poller
	rc   syscall.RawConn // ep's
	epfd int

	mu      sync.Mutex
	waiting map[int32]*stream // by file descriptor
	running bool              // the loop goroutine is running
	closed  bool
	done    chan struct{} // closed when the loop goroutine ends; nil before it starts
}

// newIdlePoller returns the poller of s, or nil when the system does not let
// it have one (then streams never hibernate). The epoll descriptor is itself
// pollable: the loop waits for it in Go's netpoller, holding no thread.
func newIdlePoller(s *session) *idlePoller {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil
	}
	ep := os.NewFile(uintptr(epfd), "idle-streams")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil
	}
	return &idlePoller{s: s, ep: ep, rc: rc, epfd: epfd, waiting: map[int32]*stream{}}
}

// add watches fd for st, until it is readable or removed. It reports false
// when the poller cannot take it (closed, or the kernel refused).
func (p *idlePoller) add(fd int, st *stream) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return false
	}
	p.waiting[int32(fd)] = st
	if !p.running {
		p.running = true
		p.done = make(chan struct{})
		p.s.wg.Add(1)
		go p.loop(p.done)
	}
	return true
}

// remove stops watching fd for st; the caller is about to close fd.
func (p *idlePoller) remove(fd int, st *stream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting[int32(fd)] == st {
		delete(p.waiting, int32(fd))
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// loop wakes the streams whose sockets became readable, until close.
func (p *idlePoller) loop(done chan struct{}) {
	defer p.s.wg.Done()
	defer close(done)
	var events [64]unix.EpollEvent
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events[:], 0)
		return werr != unix.EAGAIN && werr != unix.EINTR && (werr != nil || n > 0)
	}
	for {
		if err := p.rc.Read(wait); err != nil {
			return // closed
		}
		if werr != nil {
			p.s.log.Warn("idle stream poller failed; waking every idle stream", "err", werr)
			p.wakeAll()
			return
		}
		woken := make([]*stream, 0, n)
		p.mu.Lock()
		for _, ev := range events[:n] {
			if st := p.waiting[ev.Fd]; st != nil {
				delete(p.waiting, ev.Fd)
				_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
				woken = append(woken, st)
			}
		}
		p.mu.Unlock()
		for _, st := range woken {
			st.wakeUp()
		}
	}
}

// wakeAll wakes every waiting stream, when the poller cannot go on.
func (p *idlePoller) wakeAll() {
	p.mu.Lock()
	p.closed = true
	var woken []*stream
	for fd, st := range p.waiting {
		delete(p.waiting, fd)
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		woken = append(woken, st)
	}
	p.mu.Unlock()
	for _, st := range woken {
		st.wakeUp()
	}
}

// close ends the loop and waits for it; streams still waiting were aborted
// before (the session's abortAll), so none is left to wake.
func (p *idlePoller) close() {
	p.mu.Lock()
	p.closed = true
	done := p.done
	p.mu.Unlock()
	_ = p.ep.Close() // wakes the loop's wait with an error
	if done != nil {
		<-done
	}
}

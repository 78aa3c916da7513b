package tunnel

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// idlePoller watches the sockets of a session's hibernating streams (see
// stream.hibernate): one epoll set and one goroutine for the whole session,
// and only while some stream hibernates, where every idle stream would
// otherwise keep a goroutine of its own with a stack grown by its last write
// through TLS. A stream whose socket becomes readable (data, FIN or reset)
// is woken: its upstream goroutine starts again. When the last one has gone,
// the epoll set is closed and its goroutine ends; the next hibernation
// starts a new one, so a session without idle streams holds neither.
type idlePoller struct {
	s *session

	mu      sync.Mutex
	set     *epollSet         // nil while no stream hibernates
	waiting map[int32]*stream // by file descriptor
	closed  bool              // the session has ended
}

// epollSet is one epoll descriptor, waited on through Go's own poller (an
// epoll descriptor is itself pollable), so its goroutine holds no thread.
type epollSet struct {
	f  *os.File
	rc syscall.RawConn
	fd int
}

// newIdlePoller returns the poller of s.
func newIdlePoller(s *session) *idlePoller {
	return &idlePoller{s: s, waiting: map[int32]*stream{}}
}

// openEpollSet makes a new epoll set.
func openEpollSet() (*epollSet, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "idle-streams")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &epollSet{f: f, rc: rc, fd: fd}, nil
}

// add watches fd for st, until it is readable or removed. It reports false
// when the poller cannot take it (the session ended, or the kernel refused).
func (p *idlePoller) add(fd int, st *stream) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if p.set == nil {
		set, err := openEpollSet()
		if err != nil {
			return false
		}
		p.set = set
		p.s.wg.Add(1)
		go p.loop(set)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(p.set.fd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.stopIfIdleLocked()
		return false
	}
	p.waiting[int32(fd)] = st
	return true
}

// remove stops watching fd for st; the caller is about to close fd.
func (p *idlePoller) remove(fd int, st *stream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting[int32(fd)] == st {
		delete(p.waiting, int32(fd))
		_ = unix.EpollCtl(p.set.fd, unix.EPOLL_CTL_DEL, fd, nil)
		p.stopIfIdleLocked()
	}
}

// stopIfIdleLocked closes the epoll set when no stream waits in it: its
// loop then ends. Every waiting descriptor is in the current set, since a
// set is only closed empty.
func (p *idlePoller) stopIfIdleLocked() {
	if p.set != nil && len(p.waiting) == 0 {
		_ = p.set.f.Close() // wakes the loop's wait with an error
		p.set = nil
	}
}

// loop wakes the streams whose sockets in set became readable, until set is
// closed.
func (p *idlePoller) loop(set *epollSet) {
	defer p.s.wg.Done()
	var events [64]unix.EpollEvent
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events[:], 0)
		return werr != unix.EAGAIN && werr != unix.EINTR && (werr != nil || n > 0)
	}
	for {
		if err := set.rc.Read(wait); err != nil {
			return // closed
		}
		if werr != nil {
			p.s.log.Warn("idle stream poller failed; waking every idle stream", "err", werr)
			p.wakeAll(set)
			return
		}
		woken := make([]*stream, 0, n)
		p.mu.Lock()
		for _, ev := range events[:n] {
			if st := p.waiting[ev.Fd]; st != nil {
				delete(p.waiting, ev.Fd)
				_ = unix.EpollCtl(set.fd, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
				woken = append(woken, st)
			}
		}
		if p.set == set {
			p.stopIfIdleLocked()
		}
		p.mu.Unlock()
		for _, st := range woken {
			st.wakeUp()
		}
	}
}

// wakeAll wakes every waiting stream, when set cannot be waited on.
func (p *idlePoller) wakeAll(set *epollSet) {
	p.mu.Lock()
	var woken []*stream
	if p.set == set {
		for fd, st := range p.waiting {
			delete(p.waiting, fd)
			woken = append(woken, st)
		}
		_ = set.f.Close()
		p.set = nil
	}
	p.mu.Unlock()
	for _, st := range woken {
		st.wakeUp()
	}
}

// close ends the poller with its session: streams still waiting were
// aborted before (the session's abortAll), so none is left to wake. The
// loop's goroutine is counted in the session's wait group.
func (p *idlePoller) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.set != nil {
		_ = p.set.f.Close()
		p.set = nil
	}
}

package tunnel

import (
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// flowPoller reads the replies of every UDP flow of a hub with one epoll set
// and one goroutine, so that an idle flow costs its socket and a table
// entry, not a goroutine. The set is made with the first flow and closed
// with the last (a hub at rest holds neither), and with the hub. Reads go through each socket's RawConn, so a flow closed
// meanwhile is never read by its old descriptor number.
type flowPoller struct {
	h *Hub

	mu     sync.Mutex
	set    *epollSet
	flows  map[int32]*hubFlow
	closed bool
}

func newFlowPoller(h *Hub) *flowPoller { return &flowPoller{h: h, flows: make(map[int32]*hubFlow)} }

// watch reads fl's replies from now on; false if it cannot (then the caller
// reads them another way).
func (p *flowPoller) watch(fl *hubFlow) bool {
	rc, err := fl.uc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || fd < 0 {
		return false
	}
	if p.set == nil {
		set, err := openEpollSet()
		if err != nil {
			return false
		}
		p.set = set
		p.h.wg.Add(1)
		go p.loop(set)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(p.set.fd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		if len(p.flows) == 0 {
			_ = p.set.f.Close()
			p.set = nil
		}
		return false
	}
	fl.rc, fl.fd = rc, int32(fd)
	p.flows[int32(fd)] = fl
	return true
}

// unwatch stops reading fl; the caller closes its socket next.
func (p *flowPoller) unwatch(fl *hubFlow) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set != nil && p.flows[fl.fd] == fl {
		delete(p.flows, fl.fd)
		_ = unix.EpollCtl(p.set.fd, unix.EPOLL_CTL_DEL, int(fl.fd), nil)
		if len(p.flows) == 0 {
			_ = p.set.f.Close() // its loop ends
			p.set = nil
		}
	}
}

// close ends the poller (the hub stops; every flow has ended).
func (p *flowPoller) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.set != nil {
		_ = p.set.f.Close()
		p.set = nil
	}
}

// flowReadBurst is how many datagrams one flow may send back per round of
// the poller before the other ready flows get their turn.
const flowReadBurst = 32

func (p *flowPoller) loop(set *epollSet) {
	defer p.h.wg.Done()
	var perr error
	defer func() {
		if perr != nil {
			p.close()
		}
	}()
	defer recoverInto(p.h.log, "the UDP flow poller", &perr)
	var events [128]unix.EpollEvent
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events[:], 0)
		return werr != unix.EAGAIN && werr != unix.EINTR && (werr != nil || n > 0)
	}
	ready := make([]*hubFlow, 0, len(events))
	for {
		if err := set.rc.Read(wait); err != nil {
			return // closed
		}
		if werr != nil {
			p.h.log.Error("UDP flow poller failed", "err", werr)
			return
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, ev := range events[:n] {
			if fl := p.flows[ev.Fd]; fl != nil {
				ready = append(ready, fl)
			}
		}
		p.mu.Unlock()
		for i, fl := range ready {
			fl.owner.drainReplies(fl)
			ready[i] = nil
		}
	}
}

// drainReplies sends back up to flowReadBurst datagrams waiting on fl's
// socket, without waiting for more.
func (f *hubFlows) drainReplies(fl *hubFlow) {
	for range flowReadBurst {
		var bp *[]byte
		var n int
		var rerr error
		err := fl.rc.Read(func(fd uintptr) bool {
			b := getBuf(MaxDatagram + 1)
			for {
				n, _, rerr = syscall.Recvfrom(int(fd), *b, syscall.MSG_DONTWAIT)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr != nil {
				putBuf(b)
			} else {
				bp = b
			}
			return true // never wait here: the epoll set does
		})
		if err != nil || rerr == syscall.EAGAIN {
			return // closed, or nothing more
		}
		if rerr != nil {
			continue // an ICMP error of an earlier datagram: the flow goes on
		}
		if n <= MaxDatagram {
			fl.last.Store(time.Now().UnixNano())
			f.touch(fl)
			f.toEdge(fl, (*bp)[:n])
		}
		putBuf(bp)
	}
}

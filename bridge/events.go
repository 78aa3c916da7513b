package bridge

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/serve-zone/remoteingress/tunnel"
)

// dropLogInterval is how often at most the event drainer logs that events were dropped.
const dropLogInterval = 10 * time.Second

// eventQueue carries engine events to the output without ever blocking the
// engine: a bounded queue drained by one goroutine. Events that do not fit,
// or whose write fails, are dropped and counted.
type eventQueue struct {
	ch      chan tunnel.Event
	dropped atomic.Uint64
	log     *slog.Logger
	stop    chan struct{}
	done    chan struct{}
}

// newEventQueue returns a queue holding up to size events.
func newEventQueue(size int, log *slog.Logger) *eventQueue {
	return &eventQueue{
		ch:   make(chan tunnel.Event, size),
		log:  log,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// sink is the tunnel.EventSink handed to the engine. It never blocks and never logs.
func (q *eventQueue) sink(ev tunnel.Event) {
	if ev.Data == nil {
		ev.Data = struct{}{}
	}
	select {
	case q.ch <- ev:
	default:
		q.dropped.Add(1)
	}
}

// droppedCount is how many events could not be delivered so far.
func (q *eventQueue) droppedCount() uint64 { return q.dropped.Load() }

// run delivers events with write until close is called, then delivers what
// is still queued and returns. It is the only reader of the queue.
func (q *eventQueue) run(write func(tunnel.Event) error) {
	defer close(q.done)
	var reported uint64
	var lastLog time.Time
	deliver := func(ev tunnel.Event) {
		if err := write(ev); err != nil {
			q.dropped.Add(1)
		}
		if n := q.dropped.Load(); n != reported && time.Since(lastLog) >= dropLogInterval {
			q.log.Warn("events dropped: the output is not keeping up", "dropped", n)
			reported, lastLog = n, time.Now()
		}
	}
	for {
		select {
		case ev := <-q.ch:
			deliver(ev)
		case <-q.stop:
			for {
				select {
				case ev := <-q.ch:
					deliver(ev)
				default:
					return
				}
			}
		}
	}
}

// close makes run flush the queue and return; wait for done.
func (q *eventQueue) close() { close(q.stop) }

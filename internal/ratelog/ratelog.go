// Package ratelog bounds log lines that outside input can cause: a burst is
// logged, the rest counted and summed up in one line per interval, so that a
// flood of bad input never turns into a flood on stderr.
package ratelog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults of a Limiter.
const (
	// DefaultBurst is how many lines are logged per interval.
	DefaultBurst = 10
	// DefaultInterval is the window of DefaultBurst.
	DefaultInterval = time.Second
)

// Limiter writes at most Burst lines per Interval to its logger; the ones
// beyond are counted, and the count is logged in one summary line when the
// interval is over (or at Flush). The zero value is not usable: use New.
type Limiter struct {
	log     *slog.Logger
	summary string // format of the summary line, taking the count
	level   slog.Level
	// Burst and Interval may be changed before first use.
	Burst    int
	Interval time.Duration
	now      func() time.Time

	mu         sync.Mutex
	windowEnd  time.Time   // end of the current window
	logged     int         // lines logged in the current window
	suppressed int         // lines not logged since the last summary
	timer      *time.Timer // writes the summary at windowEnd; nil if none is due
}

// New returns a limiter writing to log at level at most DefaultBurst lines
// per DefaultInterval; summary formats the count of the others
// ("%d more ...").
func New(log *slog.Logger, level slog.Level, summary string) *Limiter {
	return &Limiter{log: log, level: level, summary: summary, Burst: DefaultBurst, Interval: DefaultInterval, now: time.Now}
}

// Log logs msg with attrs, or counts it when the window's burst is spent.
func (l *Limiter) Log(msg string, attrs ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !now.Before(l.windowEnd) {
		l.flushLocked()
		l.windowEnd = now.Add(l.Interval)
		l.logged = 0
	}
	if l.logged < l.Burst {
		l.logged++
		l.log.Log(context.Background(), l.level, msg, attrs...)
		return
	}
	l.suppressed++
	if l.timer == nil {
		l.timer = time.AfterFunc(l.windowEnd.Sub(now), l.Flush)
	}
}

// Flush writes the summary of the lines not logged, if any.
func (l *Limiter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

// flushLocked is Flush with l.mu held.
func (l *Limiter) flushLocked() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.suppressed > 0 {
		l.log.Log(context.Background(), l.level, fmt.Sprintf(l.summary, l.suppressed), "count", l.suppressed)
		l.suppressed = 0
	}
}

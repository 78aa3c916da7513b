package bridge

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Limits of the logs written for each bad input line and each failed request,
// so that a flood of them cannot turn stderr into a flood too.
const (
	// logBurst is how many such lines are logged per logInterval.
	logBurst = 10
	// logInterval is the window of logBurst.
	logInterval = time.Second
)

// logLimiter writes at most burst warnings per interval to log; the ones
// beyond are counted, and the count is logged in one summary line when the
// interval is over (or at close).
type logLimiter struct {
	log      *slog.Logger
	summary  string // format of the summary line, taking the count
	burst    int
	interval time.Duration
	now      func() time.Time

	mu         sync.Mutex
	windowEnd  time.Time   // end of the current window
	logged     int         // lines logged in the current window
	suppressed int         // lines not logged since the last summary
	timer      *time.Timer // writes the summary at windowEnd; nil if none is due
}

// newLogLimiter returns a limiter writing to log at most logBurst lines per
// logInterval; summary formats the count of the others ("%d more ...").
func newLogLimiter(log *slog.Logger, summary string) *logLimiter {
	return &logLimiter{log: log, summary: summary, burst: logBurst, interval: logInterval, now: time.Now}
}

// warn logs msg with attrs, or counts it when the window's burst is spent.
func (l *logLimiter) warn(msg string, attrs ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !now.Before(l.windowEnd) {
		l.flushLocked()
		l.windowEnd = now.Add(l.interval)
		l.logged = 0
	}
	if l.logged < l.burst {
		l.logged++
		l.log.Warn(msg, attrs...)
		return
	}
	l.suppressed++
	if l.timer == nil {
		l.timer = time.AfterFunc(l.windowEnd.Sub(now), l.flush)
	}
}

// flush writes the summary of the lines not logged, if any.
func (l *logLimiter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

// flushLocked is flush with l.mu held.
func (l *logLimiter) flushLocked() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.suppressed > 0 {
		l.log.Warn(fmt.Sprintf(l.summary, l.suppressed), "count", l.suppressed)
		l.suppressed = 0
	}
}

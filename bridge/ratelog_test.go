package bridge

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// testLimiter is a logLimiter on a fake clock, logging to logs; its summary
// timer is real but long.
func testLimiter(logs *testutil.SyncBuffer, now *time.Time) *logLimiter {
	l := newLogLimiter(slog.New(slog.NewTextHandler(logs, nil)), "%d more lines rejected")
	l.interval = time.Hour
	l.now = func() time.Time { return *now }
	return l
}

func TestLogLimiterLogsABurstThenCounts(t *testing.T) {
	var logs testutil.SyncBuffer
	now := time.Unix(1000, 0)
	l := testLimiter(&logs, &now)
	for range 25 {
		l.warn("rejected input line", "reason", "r")
	}
	if n := strings.Count(logs.String(), "rejected input line"); n != logBurst {
		t.Fatalf("%d lines logged in the first window, want %d:\n%s", n, logBurst, logs.String())
	}
	if strings.Contains(logs.String(), "more lines rejected") {
		t.Fatal("summary written before the window ended")
	}

	// The next window starts with the summary of the last one.
	now = now.Add(l.interval)
	l.warn("rejected input line", "reason", "r")
	got := logs.String()
	if !strings.Contains(got, `msg="15 more lines rejected" count=15`) {
		t.Fatalf("no summary of the 15 lines not logged:\n%s", got)
	}
	if strings.Index(got, "15 more lines rejected") > strings.LastIndex(got, "rejected input line") {
		t.Fatalf("summary after the next window's line:\n%s", got)
	}

	// flush writes what is pending, once.
	for range 20 {
		l.warn("rejected input line", "reason", "r")
	}
	l.flush()
	l.flush()
	if n := strings.Count(logs.String(), "more lines rejected"); n != 2 || !strings.Contains(logs.String(), `msg="11 more lines rejected"`) {
		t.Fatalf("after flush:\n%s", logs.String())
	}
}

func TestLogLimiterSummaryComesWithoutFurtherLines(t *testing.T) {
	var logs testutil.SyncBuffer
	l := newLogLimiter(slog.New(slog.NewTextHandler(&logs, nil)), "%d more lines rejected")
	l.interval = 50 * time.Millisecond
	for range logBurst + 3 {
		l.warn("rejected input line")
	}
	if !testutil.Poll(waitLimit, func() bool { return strings.Contains(logs.String(), `msg="3 more lines rejected"`) }) {
		t.Fatalf("no summary at the end of the window:\n%s", logs.String())
	}
}

package ratelog

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// testLimiter is a Limiter on a fake clock, logging to logs (safe for the
// summary timer, which writes from its own goroutine); its summary timer is
// real but long.
func testLimiter(logs *testutil.SyncBuffer, now *time.Time) *Limiter {
	l := New(slog.New(slog.NewTextHandler(logs, nil)), slog.LevelWarn, "%d more lines rejected")
	l.Interval = time.Hour
	l.now = func() time.Time { return *now }
	return l
}

func TestLimiterLogsABurstThenCounts(t *testing.T) {
	var logs testutil.SyncBuffer
	now := time.Unix(1000, 0)
	l := testLimiter(&logs, &now)
	for range 25 {
		l.Log("rejected input line", "reason", "r")
	}
	if n := strings.Count(logs.String(), "rejected input line"); n != DefaultBurst {
		t.Fatalf("%d lines logged in the first window, want %d:\n%s", n, DefaultBurst, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("lines not logged at the limiter's level:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "more lines rejected") {
		t.Fatal("summary written before the window ended")
	}

	// The next window starts with the summary of the last one.
	now = now.Add(l.Interval)
	l.Log("rejected input line", "reason", "r")
	got := logs.String()
	if !strings.Contains(got, `msg="15 more lines rejected" count=15`) {
		t.Fatalf("no summary of the 15 lines not logged:\n%s", got)
	}
	if strings.Index(got, "15 more lines rejected") > strings.LastIndex(got, "rejected input line") {
		t.Fatalf("summary after the next window's line:\n%s", got)
	}

	// Flush writes what is pending, once.
	for range 20 {
		l.Log("rejected input line", "reason", "r")
	}
	l.Flush()
	l.Flush()
	if n := strings.Count(logs.String(), "more lines rejected"); n != 2 || !strings.Contains(logs.String(), `msg="11 more lines rejected"`) {
		t.Fatalf("after Flush:\n%s", logs.String())
	}
}

func TestLimiterSummaryComesWithoutFurtherLines(t *testing.T) {
	var logs testutil.SyncBuffer
	l := New(slog.New(slog.NewTextHandler(&logs, nil)), slog.LevelInfo, "%d more lines rejected")
	l.Interval = 50 * time.Millisecond
	for range DefaultBurst + 3 {
		l.Log("rejected input line")
	}
	if !testutil.Poll(10*time.Second, func() bool { return strings.Contains(logs.String(), `msg="3 more lines rejected"`) }) {
		t.Fatalf("no summary at the end of the window:\n%s", logs.String())
	}
}

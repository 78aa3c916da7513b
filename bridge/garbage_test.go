package bridge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// countingWriter counts lines written to it.
type countingWriter struct{ lines atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.lines.Add(int64(bytes.Count(p, []byte("\n"))))
	return len(p), nil
}

// garbageReader yields n tiny garbage lines.
type garbageReader struct {
	n, i int
	buf  []byte
}

// garbage is the tiny lines it cycles through.
var garbage = []string{"x", "{", "]", "\x00", "\xff", `{"a"`, "1 2", "nul"}

func (g *garbageReader) Read(p []byte) (int, error) {
	for len(g.buf) < len(p) && g.i < g.n {
		g.buf = append(g.buf, garbage[g.i%len(garbage)]...)
		g.buf = append(g.buf, '\n')
		g.i++
	}
	if len(g.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, g.buf)
	g.buf = g.buf[:copy(g.buf, g.buf[n:])]
	return n, nil
}

// summaryCount matches the summary of rejected lines not logged.
var summaryCount = regexp.MustCompile(`msg="(\d+) more lines rejected"`)

func TestMillionGarbageLines(t *testing.T) {
	n := 1000000
	if raceEnabled {
		n = 100000 // the race detector needs interleavings, not volume
	}
	for _, d := range []Dialect{Management, JSONRPC} {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel() // CPU-bound, and slow under the race detector
			millionGarbageLines(t, d, n)
		})
	}
}

// millionGarbageLines runs n garbage lines through a session of dialect d:
// each is rejected, answered where the dialect says so and counted in the
// log, which keeps to its rate.
func millionGarbageLines(t *testing.T, d Dialect, n int) {
	var logs testutil.SyncBuffer
	out := &countingWriter{}
	opts := Options{Dialect: d, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	start := time.Now()
	if err := run(context.Background(), &garbageReader{n: n}, out, opts, (&fakeEngine{}).engine()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(start)

	wantOut := 1 // the ready event
	if d == JSONRPC {
		wantOut += n // an error answer each
	}
	if got := out.lines.Load(); got != int64(wantOut) {
		t.Fatalf("%d output lines, want %d", got, wantOut)
	}
	text := logs.String()
	logged := strings.Count(text, `msg="rejected input line"`)
	total := logged
	for _, m := range summaryCount.FindAllStringSubmatch(text, -1) {
		c, _ := strconv.Atoi(m[1])
		total += c
	}
	t.Logf("%d lines in %s: %d logged one by one, %d log lines in all", n, took, logged, strings.Count(text, "\n"))
	if total != n {
		t.Fatalf("%d lines accounted for in the log, want %d", total, n)
	}
	checkLogRate(t, text, took)
}

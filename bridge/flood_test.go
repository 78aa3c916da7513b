package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/ratelog"
	"github.com/serve-zone/remoteingress/internal/testutil"
)

// floodLine is the i-th line of a flood: a ping, a status request, an
// unknown method, broken JSON with an id, or garbage without one. It returns
// the raw id the answer must carry, "" when none is due.
func floodLine(d Dialect, i int) (line, id string) {
	v := ""
	if d == JSONRPC {
		v = `"jsonrpc":"2.0",`
	}
	switch i % 5 {
	case 0:
		id = fmt.Sprintf(`"p%d"`, i)
		return fmt.Sprintf(`{%s"id":%s,"method":"ping"}`, v, id), id
	case 1:
		id = fmt.Sprintf(`%d`, i)
		return fmt.Sprintf(`{%s"id":%s,"method":"getHubStatus","params":{}}`, v, id), id
	case 2:
		id = fmt.Sprintf(`"u%d"`, i)
		return fmt.Sprintf(`{%s"id":%s,"method":"nope%d"}`, v, id, i), id
	case 3:
		id = fmt.Sprintf(`"g%d"`, i)
		return fmt.Sprintf(`{"id":%s,"method":`, id), id
	default:
		return fmt.Sprintf("garbage %d", i), ""
	}
}

// peaks samples the heap and stacks in use and the number of goroutines until stop.
type peaks struct {
	heap, stacks uint64
	goroutines   int
	stop, done   chan struct{}
}

// samplePeaks starts sampling every few milliseconds.
func samplePeaks() *peaks {
	p := &peaks{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			p.heap = max(p.heap, ms.HeapInuse)
			p.stacks = max(p.stacks, ms.StackInuse)
			p.goroutines = max(p.goroutines, runtime.NumGoroutine())
			select {
			case <-p.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return p
}

// end stops sampling; the peaks are final afterwards.
func (p *peaks) end() { close(p.stop); <-p.done }

// TestPipelinedFloodIsAnsweredOnceInBoundedMemory writes 20 000 requests as
// fast as the bridge takes them while the answers are not read at first.
// Every request with an id is answered exactly once, and the goroutines and
// heap stay bounded: at most 2*DefaultMaxInFlight handlers exist at once
// (slow and quick slots), each holding a request of a few hundred bytes, so
// beyond the test's own few MiB (the lines it sends, the answers it counts)
// the session needs about 1 MiB; 64 MiB leaves room for the garbage
// collector's slack and the race detector.
func TestPipelinedFloodIsAnsweredOnceInBoundedMemory(t *testing.T) {
	const n = 20000
	dialects(t, func(t *testing.T, d Dialect) {
		runtime.GC()
		baseGoroutines := runtime.NumGoroutine()
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		var logs testutil.SyncBuffer
		opts := Options{Dialect: d, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		done := make(chan error, 1)
		go func() {
			done <- run(context.Background(), inR, outW, opts, (&fakeEngine{}).engine())
			outW.Close()
		}()
		p := samplePeaks()

		want := map[string]int{}
		nulls := 0
		var lines []string
		for i := range n {
			line, id := floodLine(d, i)
			lines = append(lines, line)
			if id != "" {
				want[id]++
			} else {
				nulls++
			}
		}
		start := time.Now()
		go func() {
			w := bufio.NewWriter(inW)
			for _, l := range lines {
				w.WriteString(l + "\n")
			}
			w.Flush()
			inW.Close()
		}()

		time.Sleep(200 * time.Millisecond) // let the answers back up
		got := map[string]int{}
		gotNulls := 0
		sc := bufio.NewScanner(outR)
		sc.Buffer(nil, 1<<20)
		first := true
		for sc.Scan() {
			var m map[string]json.RawMessage
			if d == Management {
				m = checkManagementLine(t, sc.Bytes())
			} else {
				m = checkJSONRPCLine(t, sc.Bytes())
			}
			if first {
				first = false
				continue // the ready event
			}
			id := string(m["id"])
			if id == "null" {
				gotNulls++
				continue
			}
			got[id]++
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Fatal("Run did not return")
		}
		p.end()
		took := time.Since(start)

		for id, c := range want {
			if got[id] != c {
				t.Fatalf("request %s answered %d times", id, got[id])
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d ids answered, want %d", len(got), len(want))
		}
		if d == JSONRPC && gotNulls != nulls {
			t.Fatalf("%d answers with a null id, want %d", gotNulls, nulls)
		}
		if d == Management && gotNulls != 0 {
			t.Fatalf("%d answers with a null id", gotNulls)
		}
		t.Logf("%d requests in %s; peak heap in use %.1f MiB, stacks %.1f MiB, goroutines %d (%d before)",
			n, took, float64(p.heap)/(1<<20), float64(p.stacks)/(1<<20), p.goroutines, baseGoroutines)
		if limit := uint64(64 << 20); p.heap > limit {
			t.Errorf("peak heap in use %d MiB, want below %d MiB", p.heap>>20, limit>>20)
		}
		if extra := p.goroutines - baseGoroutines; extra > 2*DefaultMaxInFlight+32 {
			t.Errorf("%d goroutines more than before, want at most %d", extra, 2*DefaultMaxInFlight+32)
		}
		checkLogRate(t, logs.String(), took)
	})
}

// checkLogRate checks that the warnings for rejected lines and failed
// requests kept to their rate over a run that took d.
func checkLogRate(t *testing.T, logs string, d time.Duration) {
	t.Helper()
	limit := ratelog.DefaultBurst * (int(d/ratelog.DefaultInterval) + 2)
	for _, msg := range []string{`msg="rejected input line"`, `msg="request failed"`} {
		if n := strings.Count(logs, msg); n > limit {
			t.Errorf("%d lines %s in %s, want at most %d", n, msg, d, limit)
		}
	}
}

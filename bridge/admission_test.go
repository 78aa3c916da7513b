package bridge

import (
	"bufio"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestAdmissionBoundsSlotsAndBytes(t *testing.T) {
	a := newAdmission(2, 100)
	admitted := make(chan int64, 3)
	try := func(c class, n int64) {
		go func() {
			if a.acquire(c, n) {
				admitted <- n
			}
		}()
	}
	expectNone := func() {
		t.Helper()
		select {
		case n := <-admitted:
			t.Fatalf("admitted %d over the limit", n)
		case <-time.After(50 * time.Millisecond):
		}
	}
	expect := func(want int64) {
		t.Helper()
		select {
		case n := <-admitted:
			if n != want {
				t.Fatalf("admitted %d, want %d", n, want)
			}
		case <-time.After(waitLimit):
			t.Fatalf("%d not admitted", want)
		}
	}
	if !a.acquire(slowClass, 60) || !a.acquire(slowClass, 1) {
		t.Fatal("refused while free")
	}
	try(slowClass, 10)
	expectNone() // both slow slots taken...
	try(quickClass, 2)
	expect(2) // ...but not the quick ones
	a.release(slowClass, 1)
	expect(10)
	a.release(slowClass, 10)
	a.release(quickClass, 2)
	try(quickClass, 50)
	expectNone() // 60+50 bytes exceed the budget
	a.release(slowClass, 60)
	expect(50)
	a.release(quickClass, 50)
	// A request over the budget is admitted alone.
	if !a.acquire(slowClass, 500) {
		t.Fatal("an oversize request was refused when nothing is in flight")
	}
	try(quickClass, 1)
	expectNone()
	a.close()
	select {
	case n := <-admitted:
		t.Fatalf("admitted %d after close", n)
	case <-time.After(50 * time.Millisecond):
	}
	if a.acquire(quickClass, 0) {
		t.Fatal("acquire after close succeeded")
	}
}

// TestBlockedStartWithMoreThanTheCapQueuedBehindIt blocks a start in the
// engine: the starts queued behind it take the slow slots, pings are still
// answered from the quick ones, and once more starts wait for a slot, the
// input is no longer read. Once the engine returns, everything is answered.
func TestBlockedStartWithMoreThanTheCapQueuedBehindIt(t *testing.T) {
	const (
		limit  = 8
		starts = 2000 // far more than the input buffer holds
		pings  = 100
	)
	dialects(t, func(t *testing.T, d Dialect) {
		eng := &fakeEngine{edgeEntered: make(chan struct{}, 1), edgeGate: make(chan struct{})}
		s := startSession(t, d, eng.engine(), func(o *Options) { o.MaxInFlight = limit })
		s.skipReady()
		base := runtime.NumGoroutine()
		startLine := func(i int) string {
			return s.requestLine(fmt.Sprintf(`"e%d"`, i), "startEdge", edgeParams(80)) + "\n"
		}
		pingLine := func(i int) string { return s.requestLine(fmt.Sprintf(`"p%d"`, i), "ping", nil) + "\n" }

		// The slow slots fill up; pings are answered all the same.
		for i := range limit {
			s.send(strings.TrimSuffix(startLine(i), "\n"))
		}
		select {
		case <-eng.edgeEntered:
		case <-time.After(waitLimit):
			t.Fatal("startEdge never reached the engine")
		}
		for i := range pings {
			s.send(strings.TrimSuffix(pingLine(i), "\n"))
			if r := s.replyOf(s.responseTo(fmt.Sprintf(`"p%d"`, i))); !r.ok {
				t.Fatalf("ping while the starts hang: %+v", r)
			}
		}

		// More starts: the reader waits for a slot, and the writer for the reader.
		written := make(chan struct{})
		go func() {
			defer close(written)
			w := bufio.NewWriter(s.in)
			for i := limit; i < starts; i++ {
				w.WriteString(startLine(i))
			}
			for i := pings; i < 2*pings; i++ {
				w.WriteString(pingLine(i))
			}
			w.Flush()
		}()
		time.Sleep(300 * time.Millisecond)
		select {
		case <-written:
			t.Fatal("the whole input was read while every slot was taken")
		default:
		}
		if extra := runtime.NumGoroutine() - base; extra > limit+16 {
			t.Fatalf("%d more goroutines with the start blocked, want at most %d", extra, limit+16)
		}

		close(eng.edgeGate)
		got := map[string]reply{}
		for len(got) < starts+pings {
			m := s.next()
			if _, dup := got[string(m.ID)]; dup {
				t.Fatalf("answered twice: %s", m.raw)
			}
			got[string(m.ID)] = s.replyOf(m)
		}
		select {
		case <-written:
		case <-time.After(waitLimit):
			t.Fatal("the writer is still blocked")
		}
		ok := 0
		for i := range starts {
			r, found := got[fmt.Sprintf(`"e%d"`, i)]
			switch {
			case !found:
				t.Fatalf("start e%d not answered", i)
			case r.ok:
				ok++
			case r.message != "edge is already running":
				t.Fatalf("start e%d: %+v", i, r)
			}
		}
		if ok != 1 {
			t.Fatalf("%d starts succeeded, want 1", ok)
		}
		for i := pings; i < 2*pings; i++ {
			if r := got[fmt.Sprintf(`"p%d"`, i)]; !r.ok {
				t.Fatalf("ping p%d: %+v", i, r)
			}
		}
		s.expectPingNext()
	})
}

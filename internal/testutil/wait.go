package testutil

import (
	"testing"
	"time"
)

// pollMin and pollMax bound the pause between two checks of a condition:
// short at first, for conditions that hold almost at once, longer later, so
// that a long wait does not spin.
const (
	pollMin = 2 * time.Millisecond
	pollMax = 50 * time.Millisecond
)

// Poll checks cond until it holds, and reports whether it did within
// timeout. cond is checked at least once, and once more after the deadline
// has passed, so that a slow last pause does not turn a pass into a failure.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	pause := pollMin
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, pollMax)
	}
}

// Eventually waits until cond holds, and fails the test if it does not
// within timeout. what names the condition in the failure.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

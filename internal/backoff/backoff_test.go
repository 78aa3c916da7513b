package backoff

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// ceil is the exponential value of attempt: min(Min*2^attempt, Max),
// computed without overflow.
func ceil(b Exponential, attempt int) time.Duration {
	if float64(b.Min)*math.Pow(2, float64(attempt)) >= float64(b.Max) {
		return b.Max
	}
	return b.Min << attempt
}

func constRand(v float64) func() float64 { return func() float64 { return v } }

// checkDelay asserts that delay is within [d/2, d] for the attempt.
func checkDelay(t *testing.T, b Exponential, attempt int, got time.Duration) {
	t.Helper()
	d := ceil(b, attempt)
	if got < d/2 || got > d {
		t.Errorf("Exponential{%v,%v}.Delay(%d) = %v, want within [%v, %v]", b.Min, b.Max, attempt, got, d/2, d)
	}
	if got > b.Max {
		t.Errorf("Exponential{%v,%v}.Delay(%d) = %v exceeds Max", b.Min, b.Max, attempt, got)
	}
}

func TestExponentialBounds(t *testing.T) {
	configs := []Exponential{
		{Min: time.Second, Max: 30 * time.Second}, // the edge's reconnect defaults
		{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		{Min: 100 * time.Millisecond, Max: 10 * time.Second},
		{Min: 5 * time.Second, Max: 300 * time.Second}, // the edge's STUN retries
		{Min: time.Millisecond, Max: time.Hour},
		{Min: 3 * time.Nanosecond, Max: 1000 * time.Nanosecond}, // odd values: d/2 rounds down
		{Min: time.Second, Max: time.Second},
		{Min: 3 * time.Second, Max: 2 * time.Second}, // Max below Min caps at Max
	}
	for _, b := range configs {
		t.Run(fmt.Sprintf("%v-%v", b.Min, b.Max), func(t *testing.T) {
			var prevLo, prevHi time.Duration
			for attempt := 0; attempt <= 20; attempt++ {
				d := ceil(b, attempt)

				lo := Exponential{Min: b.Min, Max: b.Max, Rand: constRand(0)}.Delay(attempt)
				if lo != d/2 {
					t.Errorf("attempt %d, Rand 0: %v, want exactly d/2 = %v", attempt, lo, d/2)
				}
				checkDelay(t, b, attempt, lo)

				hi := Exponential{Min: b.Min, Max: b.Max, Rand: constRand(0.999999)}.Delay(attempt)
				checkDelay(t, b, attempt, hi)
				// 0.999999 of the jitter range: within a millionth of d (plus rounding).
				if slack := d/1_000_000 + 1; hi < d-slack {
					t.Errorf("attempt %d, Rand 0.999999: %v, want about %v", attempt, hi, d)
				}

				mid := Exponential{Min: b.Min, Max: b.Max, Rand: constRand(0.5)}.Delay(attempt)
				checkDelay(t, b, attempt, mid)
				if mid < lo || mid > hi {
					t.Errorf("attempt %d: Rand 0.5 gives %v, outside [%v, %v]", attempt, mid, lo, hi)
				}

				if attempt > 0 && (lo < prevLo || hi < prevHi) {
					t.Errorf("attempt %d: bounds [%v, %v] below attempt %d's [%v, %v]", attempt, lo, hi, attempt-1, prevLo, prevHi)
				}
				prevLo, prevHi = lo, hi
			}
			// The cap is reached and held.
			if got := (Exponential{Min: b.Min, Max: b.Max, Rand: constRand(0)}).Delay(20); got != min(b.Min<<20, b.Max)/2 {
				t.Errorf("Delay(20) = %v, want %v", got, min(b.Min<<20, b.Max)/2)
			}
		})
	}
}

func TestExponentialExactValues(t *testing.T) {
	b := Exponential{Min: time.Second, Max: 30 * time.Second, Rand: constRand(0)}
	var got []time.Duration
	for attempt := 0; attempt < 8; attempt++ {
		got = append(got, b.Delay(attempt))
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 15 * time.Second, 15 * time.Second, 15 * time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Rand 0 delays = %v, want %v", got, want)
	}
}

func TestExponentialDefaultRand(t *testing.T) {
	b := Exponential{Min: 10 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; attempt <= 20; attempt++ {
		for i := 0; i < 50; i++ {
			checkDelay(t, b, attempt, b.Delay(attempt))
		}
	}
}

// TestExponentialHugeAttempts: the attempt counter of a long outage keeps
// growing; the delay must stay at the cap.
func TestExponentialHugeAttempts(t *testing.T) {
	for _, b := range []Exponential{
		{Min: time.Second, Max: 30 * time.Second},
		{Min: time.Nanosecond, Max: time.Hour},
		{Min: 5 * time.Second, Max: 300 * time.Second},
	} {
		for _, attempt := range []int{21, 31, 32, 33, 62, 63, 64, 65, 100, 1000, 1 << 20, math.MaxInt32, math.MaxInt} {
			for _, r := range []float64{0, 0.5, 0.999999} {
				got := Exponential{Min: b.Min, Max: b.Max, Rand: constRand(r)}.Delay(attempt)
				checkDelay(t, b, attempt, got)
				if attempt >= 63 && (got < b.Max/2 || got > b.Max) {
					t.Errorf("Exponential{%v,%v}.Delay(%d) with Rand %v = %v, want within [%v, %v]",
						b.Min, b.Max, attempt, r, got, b.Max/2, b.Max)
				}
			}
		}
	}
}

// TestExponentialLargeMaxDoesNotOverflow: with a cap near the largest Duration
// (a caller's way of saying "no cap"), doubling Min must not wrap around to
// negative or zero delays.
func TestExponentialLargeMaxDoesNotOverflow(t *testing.T) {
	for _, b := range []Exponential{
		{Min: time.Second, Max: math.MaxInt64},
		{Min: time.Nanosecond, Max: math.MaxInt64},
		{Min: 5 * time.Second, Max: math.MaxInt64 / 2},
	} {
		for attempt := 0; attempt <= 100; attempt++ {
			got := Exponential{Min: b.Min, Max: b.Max, Rand: constRand(0)}.Delay(attempt)
			d := ceil(b, attempt)
			if got < d/2 || got > d {
				t.Errorf("Exponential{Min: %v, Max: %v}.Delay(%d) = %v, want within [%v, %v] (first failing attempt)",
					b.Min, b.Max, attempt, got, d/2, d)
				break
			}
		}
	}
}

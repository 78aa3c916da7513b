// Package backoff computes retry delays: exponential growth with a cap and
// jitter, so that many clients that lost the same server do not come back
// in lock step.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Exponential computes delays that double from Min up to Max, with "equal
// jitter": each delay is uniformly between half and all of the exponential
// value. A Max below Min caps at Max.
type Exponential struct {
	Min, Max time.Duration
	// Rand returns a number in [0,1); nil uses math/rand/v2.
	Rand func() float64
}

// Delay is the wait before retry number attempt (0 for the first retry).
func (b Exponential) Delay(attempt int) time.Duration {
	d := max(b.Min, 1)
	for i := 0; i < attempt && d < b.Max; i++ {
		if d > b.Max/2 {
			d = b.Max
			break
		}
		d *= 2
	}
	d = min(d, b.Max)
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}

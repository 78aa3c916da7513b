//go:build !race

package bridge

// raceEnabled reports that the tests run under the race detector, which
// makes the CPU-bound floods several times slower.
const raceEnabled = false

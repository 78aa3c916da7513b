package tunnel

import (
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBufGetSizes(t *testing.T) {
	tests := []struct {
		n, wantLen, wantCap int
	}{
		{0, 0, smallBuf},
		{1, 1, smallBuf},
		{16 << 10, 16 << 10, smallBuf},
		{16<<10 + 1, 16<<10 + 1, largeBuf},
		{64 << 10, 64 << 10, largeBuf},
		{64<<10 + 1, 64<<10 + 1, hugeBuf},
		{256 << 10, 256 << 10, hugeBuf},
		{256<<10 + 1, 256<<10 + 1, 256<<10 + 1},
		{1 << 20, 1 << 20, 1 << 20},
	}
	if smallBuf != 16<<10 || largeBuf != 64<<10 || hugeBuf != 256<<10 {
		t.Fatalf("size classes %d/%d/%d, want 16 KiB/64 KiB/256 KiB", smallBuf, largeBuf, hugeBuf)
	}
	type shape struct{ Len, Cap int }
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			// Twice: a fresh buffer, then (usually) a pooled one that was
			// put back with another length.
			for round := 0; round < 2; round++ {
				bp := getBuf(tc.n)
				if bp == nil {
					t.Fatal("getBuf returned nil")
				}
				if diff := cmp.Diff(shape{tc.wantLen, tc.wantCap}, shape{len(*bp), cap(*bp)}); diff != "" {
					t.Fatalf("round %d: getBuf(%d) (-want +got):\n%s", round, tc.n, diff)
				}
				b := *bp
				for i := range b {
					b[i] = byte(i)
				}
				*bp = (*bp)[:min(1, len(*bp))] // callers may reslice before putting back
				putBuf(bp)
			}
		})
	}
}

// TestBufPutIgnoresForeignBuffers: putBuf must not pool a buffer of another
// capacity, or getBuf would hand out a slice shorter than asked for.
func TestBufPutIgnoresForeignBuffers(t *testing.T) {
	for _, c := range []int{1, 100, smallBuf - 1, smallBuf + 1, largeBuf - 1, largeBuf + 1, hugeBuf - 1, hugeBuf + 1, 2 * hugeBuf} {
		for i := 0; i < 8; i++ {
			b := make([]byte, c)
			putBuf(&b)
			b2 := make([]byte, 0, c)
			putBuf(&b2)
		}
	}
	for i := 0; i < 32; i++ {
		s, l, h := getBuf(smallBuf), getBuf(largeBuf), getBuf(hugeBuf)
		if len(*s) != smallBuf || cap(*s) != smallBuf || len(*l) != largeBuf || cap(*l) != largeBuf || len(*h) != hugeBuf || cap(*h) != hugeBuf {
			t.Fatalf("after foreign puts: small %d/%d, large %d/%d, huge %d/%d", len(*s), cap(*s), len(*l), cap(*l), len(*h), cap(*h))
		}
		putBuf(s)
		putBuf(l)
		putBuf(h)
	}
}

func TestBufGetPutZeroAllocs(t *testing.T) {
	if unitRaceEnabled() {
		t.Skip("the race detector makes sync.Pool drop buffers at random")
	}
	for _, n := range []int{1, 100, smallBuf, smallBuf + 1, largeBuf, largeBuf + 1, hugeBuf} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			allocs := testing.AllocsPerRun(1000, func() {
				bp := getBuf(n)
				(*bp)[0] = 1
				putBuf(bp)
			})
			if allocs != 0 {
				t.Errorf("getBuf(%d)/putBuf: %v allocs per cycle, want 0", n, allocs)
			}
		})
	}
	// Above the huge class nothing is pooled.
	allocs := testing.AllocsPerRun(100, func() { putBuf(getBuf(hugeBuf + 1)) })
	if allocs < 1 {
		t.Errorf("getBuf(hugeBuf+1): %v allocs, want a fresh buffer each time", allocs)
	}
}

// TestBufConcurrentOwnership: a buffer is owned by one caller between getBuf
// and putBuf (run with -race).
func TestBufConcurrentOwnership(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				n := []int{10, smallBuf, smallBuf + 10, largeBuf, largeBuf + 10, hugeBuf}[i%6]
				bp := getBuf(n)
				b := *bp
				mark := byte(g*31 + i)
				for j := 0; j < len(b); j += 997 {
					b[j] = mark
				}
				for j := 0; j < len(b); j += 997 {
					if b[j] != mark {
						errs <- fmt.Sprintf("goroutine %d: buffer changed while owned", g)
						return
					}
				}
				putBuf(bp)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestNextReadChunk: reads grow through the buffer classes while they fill
// their buffer and fall back to the smallest for small messages.
func TestNextReadChunk(t *testing.T) {
	chunk := minReadChunk
	var bufs []int
	for i := 0; i < 6; i++ { // a bulk transfer: every read fills its buffer
		bufs = append(bufs, chunk+headerLen)
		chunk = nextReadChunk(chunk, chunk, chunk)
	}
	if diff := cmp.Diff([]int{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 256 << 10}, bufs); diff != "" {
		t.Errorf("buffer sizes of a bulk transfer (-want +got):\n%s", diff)
	}
	if got := nextReadChunk(maxDataFrame, maxDataFrame, 100); got != minReadChunk {
		t.Errorf("after a 100-byte read: %d, want %d", got, minReadChunk)
	}
	if got := nextReadChunk(maxDataFrame, maxDataFrame, 100<<10); got != maxDataFrame {
		t.Errorf("after a 100 KiB read of a 256 KiB buffer: %d, want it kept", got)
	}
	if got := nextReadChunk(maxDataFrame, 1000, 1000); got != maxDataFrame {
		t.Errorf("a read cut short by credit: %d, want the chunk kept", got)
	}
	if got := nextReadChunk(64<<10-headerLen, 64<<10-headerLen, 1000); got != minReadChunk {
		t.Errorf("a 1000-byte read of a 64 KiB buffer: %d, want %d", got, minReadChunk)
	}
}

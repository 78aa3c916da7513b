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
		{64<<10 + 1, 64<<10 + 1, 64<<10 + 1},
		{1 << 20, 1 << 20, 1 << 20},
	}
	if smallBuf != 16<<10 || largeBuf != 64<<10 {
		t.Fatalf("size classes %d/%d, want 16 KiB/64 KiB", smallBuf, largeBuf)
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
	for _, c := range []int{1, 100, smallBuf - 1, smallBuf + 1, largeBuf - 1, largeBuf + 1, 2 * largeBuf} {
		for i := 0; i < 8; i++ {
			b := make([]byte, c)
			putBuf(&b)
			b2 := make([]byte, 0, c)
			putBuf(&b2)
		}
	}
	for i := 0; i < 32; i++ {
		s, l := getBuf(smallBuf), getBuf(largeBuf)
		if len(*s) != smallBuf || cap(*s) != smallBuf || len(*l) != largeBuf || cap(*l) != largeBuf {
			t.Fatalf("after foreign puts: small %d/%d, large %d/%d", len(*s), cap(*s), len(*l), cap(*l))
		}
		putBuf(s)
		putBuf(l)
	}
}

func TestBufGetPutZeroAllocs(t *testing.T) {
	if unitRaceEnabled() {
		t.Skip("the race detector makes sync.Pool drop buffers at random")
	}
	for _, n := range []int{1, 100, smallBuf, smallBuf + 1, largeBuf} {
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
	// Above the large class nothing is pooled.
	allocs := testing.AllocsPerRun(100, func() { putBuf(getBuf(largeBuf + 1)) })
	if allocs < 1 {
		t.Errorf("getBuf(largeBuf+1): %v allocs, want a fresh buffer each time", allocs)
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
				n := []int{10, smallBuf, smallBuf + 10, largeBuf}[i%4]
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

package tunnel

import "sync"

// Buffers for stream payloads come in three size classes, so that a stream
// holds memory only while bytes are in flight, and no more than its reads
// fill: small messages use small buffers, bulk transfers grow to huge ones.
const (
	smallBuf = 16 << 10
	largeBuf = 64 << 10
	hugeBuf  = 256 << 10
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
	hugePool  = sync.Pool{New: func() any { b := make([]byte, hugeBuf); return &b }}
)

// getBuf returns a buffer of length n; at most hugeBuf comes from a pool.
func getBuf(n int) *[]byte {
	var bp *[]byte
	switch {
	case n <= smallBuf:
		bp = smallPool.Get().(*[]byte)
	case n <= largeBuf:
		bp = largePool.Get().(*[]byte)
	case n <= hugeBuf:
		bp = hugePool.Get().(*[]byte)
	default:
		b := make([]byte, n)
		return &b
	}
	*bp = (*bp)[:n]
	return bp
}

// putBuf returns a buffer obtained from getBuf.
func putBuf(bp *[]byte) {
	switch cap(*bp) {
	case smallBuf:
		smallPool.Put(bp)
	case largeBuf:
		largePool.Put(bp)
	case hugeBuf:
		hugePool.Put(bp)
	}
}

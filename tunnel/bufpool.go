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

// tinyBuf is the size class of datagram frames that fit a common MTU
// (getDatagramBuf): a queue of small datagrams holds no 16 KiB buffers.
const tinyBuf = 2 << 10

var tinyPool = sync.Pool{New: func() any { b := make([]byte, tinyBuf); return &b }}

// getDatagramBuf is getBuf with a smaller class for frames of at most tinyBuf.
func getDatagramBuf(n int) *[]byte {
	if n > tinyBuf {
		return getBuf(n)
	}
	bp := tinyPool.Get().(*[]byte)
	*bp = (*bp)[:n]
	return bp
}

// putBuf returns a buffer obtained from getBuf or getDatagramBuf.
func putBuf(bp *[]byte) {
	switch cap(*bp) {
	case tinyBuf:
		tinyPool.Put(bp)
	case smallBuf:
		smallPool.Put(bp)
	case largeBuf:
		largePool.Put(bp)
	case hugeBuf:
		hugePool.Put(bp)
	}
}

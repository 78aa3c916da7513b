package bridge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// readChunkSize is the size of the read buffer; lines are assembled from
// pieces of at most this size.
const readChunkSize = 64 << 10

// keptPrefix is how much of an oversize line is kept to recover its id.
const keptPrefix = 64 << 10

// line is one input line without its line ending.
type line struct {
	// data is the whole line, or only its first keptPrefix bytes when tooLong.
	data []byte
	// size is the line's full length in bytes.
	size int64
	// tooLong reports that the line exceeded the limit and was discarded.
	tooLong bool
}

// lineReader splits its input into lines of at most max bytes. A longer line
// is read in pieces and discarded; only its prefix is kept.
type lineReader struct {
	r   *bufio.Reader
	max int
	err error
}

// newLineReader returns a lineReader accepting lines of up to max bytes.
func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, readChunkSize), max: max}
}

// next returns the next line. A last line without a newline is returned
// before the end of input; after that next returns io.EOF (or the read error).
func (lr *lineReader) next() (line, error) {
	if lr.err != nil {
		return line{}, lr.err
	}
	var l line
	for {
		chunk, err := lr.r.ReadSlice('\n')
		content := chunk
		if err == nil {
			content = chunk[:len(chunk)-1]
		}
		l.size += int64(len(content))
		switch {
		case l.tooLong:
			// discarding the rest of an oversize line
		case len(l.data)+len(content) > lr.max:
			l.tooLong = true
			prefix := make([]byte, 0, keptPrefix)
			prefix = append(prefix, l.data[:min(len(l.data), keptPrefix)]...)
			prefix = append(prefix, content[:min(len(content), keptPrefix-len(prefix))]...)
			l.data = prefix
		default:
			l.data = append(l.data, content...)
		}
		switch {
		case err == nil:
			if !l.tooLong {
				l.data = bytes.TrimSuffix(l.data, []byte{'\r'})
			}
			return l, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			lr.err = err
			if errors.Is(err, io.EOF) && l.size > 0 {
				return l, nil
			}
			return line{}, err
		}
	}
}

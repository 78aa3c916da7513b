package bridge

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readAll collects every line of input read with limit max.
func readAll(t *testing.T, r io.Reader, max int) ([]line, error) {
	t.Helper()
	lr := newLineReader(r, max)
	var lines []line
	for {
		l, err := lr.next()
		if err != nil {
			return lines, err
		}
		lines = append(lines, l)
	}
}

func TestLineReaderSplitsLines(t *testing.T) {
	lines, err := readAll(t, strings.NewReader("a\r\nbb\n\nccc"), 10)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	var got []string
	for _, l := range lines {
		if l.tooLong {
			t.Fatalf("line %q marked too long", l.data)
		}
		got = append(got, string(l.data))
	}
	if diff := cmp.Diff([]string{"a", "bb", "", "ccc"}, got); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

func TestLineReaderLimit(t *testing.T) {
	const max = 3 * readChunkSize / 2 // spans several reads
	atLimit := strings.Repeat("a", max)
	over := `{"id":"o",` + strings.Repeat("b", 5*readChunkSize)
	oneOver := atLimit + "a"
	lines, err := readAll(t, strings.NewReader(atLimit+"\n"+over+"\nnext\n"+oneOver+"\r\n"), max)
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}
	if l := lines[3]; !l.tooLong || l.size != max+2 {
		t.Errorf("line one byte over the limit (and a CR): tooLong=%v size=%d", l.tooLong, l.size)
	}
	if l := lines[0]; l.tooLong || string(l.data) != atLimit || l.size != max {
		t.Errorf("line at the limit: tooLong=%v size=%d", l.tooLong, l.size)
	}
	l := lines[1]
	if !l.tooLong || l.size != int64(len(over)) {
		t.Errorf("line over the limit: tooLong=%v size=%d", l.tooLong, l.size)
	}
	// Only the prefix is kept, in a small buffer.
	if len(l.data) != keptPrefix || cap(l.data) > keptPrefix || string(l.data) != over[:keptPrefix] {
		t.Errorf("kept %d bytes (cap %d) of the over-long line, want its first %d", len(l.data), cap(l.data), keptPrefix)
	}
	if string(lines[2].data) != "next" {
		t.Errorf("line after the over-long one: %q", lines[2].data)
	}
}

func TestLineReaderOverlongLastLine(t *testing.T) {
	lines, err := readAll(t, strings.NewReader(strings.Repeat("z", 100)), 10)
	if !errors.Is(err, io.EOF) || len(lines) != 1 || !lines[0].tooLong || lines[0].size != 100 {
		t.Fatalf("lines %+v, err %v", lines, err)
	}
}

func TestLineReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	lr := newLineReader(io.MultiReader(strings.NewReader("ok\npartial"), errReaderOf(boom)), 100)
	if l, err := lr.next(); err != nil || string(l.data) != "ok" {
		t.Fatalf("first line: %q %v", l.data, err)
	}
	for range 2 { // the error sticks
		if _, err := lr.next(); !errors.Is(err, boom) {
			t.Fatalf("got %v, want %v", err, boom)
		}
	}
}

// errReaderOf returns a reader failing every read with err.
func errReaderOf(err error) io.Reader { return failReader{err} }

// failReader fails every read.
type failReader struct{ err error }

func (f failReader) Read([]byte) (int, error) { return 0, f.err }

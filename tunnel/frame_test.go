package tunnel

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"testing"
	"testing/iotest"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// codecFrameTypes is every frame type of protocol version 1, with its name.
var codecFrameTypes = []struct {
	t    frameType
	name string
}{
	{frameOpen, "OPEN"}, {frameData, "DATA"}, {frameClose, "CLOSE"}, {frameDataBack, "DATA_BACK"},
	{frameCloseBack, "CLOSE_BACK"}, {frameWindowUpdate, "WINDOW_UPDATE"}, {frameReset, "RESET"},
	{framePing, "PING"}, {framePong, "PONG"}, {frameGoAway, "GOAWAY"}, {frameBlocked, "BLOCKED"}, {frameHello, "HELLO"},
	{frameChallenge, "CHALLENGE"}, {frameAuth, "AUTH"}, {frameAuthOK, "AUTH_OK"},
	{frameAssign, "ASSIGN"}, {frameBound, "BOUND"}, {frameDrain, "DRAIN"},
	{frameUDPOpen, "UDP_OPEN"}, {frameUDPData, "UDP_DATA"}, {frameUDPClose, "UDP_CLOSE"},
}

// unitRaceEnabled reports whether the test binary was built with -race. The
// race detector makes sync.Pool drop items on purpose, so allocation counts
// that depend on a pool are only meaningful without it.
func unitRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func codecHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// codecFrame is a decoded frame with its payload copied.
type codecFrame struct {
	Header  frameHeader
	Payload []byte
}

func codecPayload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}

func TestFrameHeaderLayout(t *testing.T) {
	tests := []struct {
		h    frameHeader
		wire string
	}{
		{frameHeader{StreamID: 0x01020304, Type: frameData, Length: 5}, "01 02 03 04 02 00 00 00 05"},
		{frameHeader{StreamID: 0, Type: frameOpen, Length: 0}, "00 00 00 00 01 00 00 00 00"},
		{frameHeader{StreamID: 0x80000001, Type: frameWindowUpdate, Length: 4}, "80 00 00 01 06 00 00 00 04"},
		{frameHeader{StreamID: 0xFFFFFFFF, Type: frameAuthOK, Length: maxPayload}, "ff ff ff ff 13 01 00 00 00"},
		{frameHeader{StreamID: 0x00A0B0C0, Type: frameGoAway, Length: 0x00010203}, "00 a0 b0 c0 0a 00 01 02 03"},
		{frameHeader{StreamID: 7, Type: frameChallenge, Length: 42}, "00 00 00 07 11 00 00 00 2a"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%#x", tc.h.Type, tc.h.StreamID), func(t *testing.T) {
			want := codecHex(t, tc.wire)

			// putHeader writes exactly the first 9 bytes.
			buf := bytes.Repeat([]byte{0xEE}, headerLen+3)
			putHeader(buf, tc.h)
			if diff := cmp.Diff(want, buf[:headerLen]); diff != "" {
				t.Errorf("putHeader bytes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]byte{0xEE, 0xEE, 0xEE}, buf[headerLen:]); diff != "" {
				t.Errorf("putHeader wrote past the header (-want +got):\n%s", diff)
			}

			got, err := parseHeader(want, maxPayload)
			if err != nil {
				t.Fatalf("parseHeader: %v", err)
			}
			if diff := cmp.Diff(tc.h, got); diff != "" {
				t.Errorf("parseHeader (-want +got):\n%s", diff)
			}

			// The writer and appendFrame put the same bytes in front of the payload.
			payload := codecPayload(int(min(tc.h.Length, 64)), 1)
			if int(tc.h.Length) == len(payload) {
				var out bytes.Buffer
				if err := newFrameWriter(&out).WriteFrame(tc.h.StreamID, tc.h.Type, payload); err != nil {
					t.Fatalf("WriteFrame: %v", err)
				}
				wantFrame := append(append([]byte(nil), want...), payload...)
				if diff := cmp.Diff(wantFrame, out.Bytes()); diff != "" {
					t.Errorf("WriteFrame bytes (-want +got):\n%s", diff)
				}
				prefix := []byte("prefix")
				app := appendFrame(append([]byte(nil), prefix...), tc.h.StreamID, tc.h.Type, payload)
				if diff := cmp.Diff(append(prefix, wantFrame...), app); diff != "" {
					t.Errorf("appendFrame bytes (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestFrameTypeKnownAndString(t *testing.T) {
	names := map[frameType]string{}
	for _, ft := range codecFrameTypes {
		names[ft.t] = ft.name
	}
	for i := 0; i < 256; i++ {
		ft := frameType(i)
		name, known := names[ft]
		if ft.Known() != known {
			t.Errorf("frameType(%#02x).Known() = %v, want %v", i, ft.Known(), known)
		}
		if !known {
			name = fmt.Sprintf("0x%02x", i)
		}
		if got := ft.String(); got != name {
			t.Errorf("frameType(%#02x).String() = %q, want %q", i, got, name)
		}
	}
}

func TestFrameRoundTripEveryType(t *testing.T) {
	const limit = 1024
	var want []codecFrame
	id := uint32(0)
	for i, ft := range codecFrameTypes {
		for _, n := range []int{0, 1, 8, limit - 1, limit} {
			id += 0x01010101
			want = append(want, codecFrame{
				Header:  frameHeader{StreamID: id, Type: ft.t, Length: uint32(n)},
				Payload: codecPayload(n, byte(i)),
			})
		}
	}
	var wire bytes.Buffer
	bw := bufio.NewWriter(&wire)
	fw := newFrameWriter(bw)
	for _, f := range want {
		if err := fw.WriteFrame(f.Header.StreamID, f.Header.Type, f.Payload); err != nil {
			t.Fatalf("WriteFrame(%+v): %v", f.Header, err)
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	encoded := wire.Bytes()

	readers := map[string]func() io.Reader{
		"whole":     func() io.Reader { return bytes.NewReader(encoded) },
		"one-byte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(encoded)) },
		"half":      func() io.Reader { return iotest.HalfReader(bytes.NewReader(encoded)) },
		"data-err":  func() io.Reader { return iotest.DataErrReader(bytes.NewReader(encoded)) },
		"limit-set": func() io.Reader { return bytes.NewReader(encoded) },
	}
	for name, mk := range readers {
		t.Run(name+"/ReadFrame", func(t *testing.T) {
			fr := newFrameReader(mk())
			if name == "limit-set" {
				fr.Limit = limit
			}
			var got []codecFrame
			for {
				h, p, err := fr.ReadFrame()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("ReadFrame after %d frames: %v", len(got), err)
				}
				got = append(got, codecFrame{h, append([]byte{}, p...)})
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("frames (-want +got):\n%s", diff)
			}
		})
		t.Run(name+"/ReadPayloadInto", func(t *testing.T) {
			fr := newFrameReader(mk())
			if name == "limit-set" {
				fr.Limit = limit
			}
			var got []codecFrame
			for {
				h, err := fr.ReadHeader()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("ReadHeader after %d frames: %v", len(got), err)
				}
				p := make([]byte, h.Length)
				if err := fr.ReadPayloadInto(p); err != nil {
					t.Fatalf("ReadPayloadInto(%+v): %v", h, err)
				}
				got = append(got, codecFrame{h, p})
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("frames (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFrameMaxPayload round-trips frames of exactly maxPayload bytes, with
// the default limit and with a Limit above maxPayload.
func TestFrameMaxPayload(t *testing.T) {
	payload := codecPayload(maxPayload, 3)
	for _, ft := range []frameType{frameData, frameDataBack} {
		for _, lim := range []uint32{0, maxPayload, maxPayload + 1, 1 << 31} {
			var wire bytes.Buffer
			if err := newFrameWriter(&wire).WriteFrame(9, ft, payload); err != nil {
				t.Fatalf("WriteFrame(maxPayload): %v", err)
			}
			if got, want := wire.Len(), headerLen+maxPayload; got != want {
				t.Fatalf("encoded %d bytes, want %d", got, want)
			}
			fr := newFrameReader(&wire)
			fr.Limit = lim
			h, p, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("%s Limit=%d: ReadFrame: %v", ft, lim, err)
			}
			if diff := cmp.Diff(frameHeader{StreamID: 9, Type: ft, Length: maxPayload}, h); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if !bytes.Equal(p, payload) {
				t.Errorf("%s Limit=%d: payload differs", ft, lim)
			}
		}
	}
}

func TestFrameWriterRejectsOversizePayload(t *testing.T) {
	var out bytes.Buffer
	err := newFrameWriter(&out).WriteFrame(1, frameData, make([]byte, maxPayload+1))
	if !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("WriteFrame(maxPayload+1) = %v, want errFrameTooLarge", err)
	}
	if out.Len() != 0 {
		t.Fatalf("WriteFrame wrote %d bytes for a rejected frame", out.Len())
	}
}

// codecWriteRecorder records each Write call and can fail the n-th one.
type codecWriteRecorder struct {
	writes [][]byte
	failAt int // 1-based; 0 never fails
}

var errCodecWrite = errors.New("codec test write failure")

func (w *codecWriteRecorder) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	if len(w.writes) == w.failAt {
		return 0, errCodecWrite
	}
	return len(p), nil
}

func TestFrameWriterWrites(t *testing.T) {
	t.Run("header and payload", func(t *testing.T) {
		w := &codecWriteRecorder{}
		if err := newFrameWriter(w).WriteFrame(0x01020304, frameData, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		want := [][]byte{codecHex(t, "01 02 03 04 02 00 00 00 05"), []byte("hello")}
		if diff := cmp.Diff(want, w.writes); diff != "" {
			t.Errorf("writes (-want +got):\n%s", diff)
		}
	})
	t.Run("empty payload is one write", func(t *testing.T) {
		w := &codecWriteRecorder{}
		if err := newFrameWriter(w).WriteFrame(5, frameClose, nil); err != nil {
			t.Fatal(err)
		}
		want := [][]byte{codecHex(t, "00 00 00 05 03 00 00 00 00")}
		if diff := cmp.Diff(want, w.writes); diff != "" {
			t.Errorf("writes (-want +got):\n%s", diff)
		}
	})
	t.Run("header write error", func(t *testing.T) {
		w := &codecWriteRecorder{failAt: 1}
		if err := newFrameWriter(w).WriteFrame(1, frameData, []byte("x")); !errors.Is(err, errCodecWrite) {
			t.Fatalf("err = %v, want the writer's error", err)
		}
		if len(w.writes) != 1 {
			t.Fatalf("payload written after the header failed: %d writes", len(w.writes))
		}
	})
	t.Run("payload write error", func(t *testing.T) {
		w := &codecWriteRecorder{failAt: 2}
		if err := newFrameWriter(w).WriteFrame(1, frameData, []byte("x")); !errors.Is(err, errCodecWrite) {
			t.Fatalf("err = %v, want the writer's error", err)
		}
	})
}

func TestParseHeaderRejects(t *testing.T) {
	tests := []struct {
		name  string
		wire  string
		limit uint32
		want  error
	}{
		{"short slice", "00 00 00 01 02 00 00 00", maxPayload, errTruncatedHeader},
		{"empty slice", "", maxPayload, errTruncatedHeader},
		{"type 0x00", "00 00 00 01 00 00 00 00 00", maxPayload, errUnknownFrame},
		{"type 0x0c", "00 00 00 01 0c 00 00 00 00", maxPayload, errUnknownFrame},
		{"type 0x0f", "00 00 00 01 0f 00 00 00 00", maxPayload, errUnknownFrame},
		{"type 0x1a", "00 00 00 01 1a 00 00 00 00", maxPayload, errUnknownFrame},
		{"type 0xff", "00 00 00 01 ff 00 00 00 00", maxPayload, errUnknownFrame},
		{"above maxPayload", "00 00 00 01 02 01 00 00 01", maxPayload, errFrameTooLarge},
		{"above maxPayload with limit maxPayload+1", "00 00 00 01 02 01 00 00 01", maxPayload + 1, errFrameTooLarge},
		{"above maxPayload with a larger limit", "00 00 00 01 02 01 00 00 01", 1 << 31, errFrameTooLarge},
		{"max uint32 length", "00 00 00 01 02 ff ff ff ff", 0xFFFFFFFF, errFrameTooLarge},
		{"above limit", "00 00 00 00 10 00 00 02 01", 512, errFrameTooLarge},
		{"limit zero", "00 00 00 00 10 00 00 00 01", 0, errFrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseHeader(codecHex(t, tc.wire), tc.limit)
			if !errors.Is(err, tc.want) {
				t.Fatalf("parseHeader = %v, want %v", err, tc.want)
			}
		})
	}
	// The boundaries themselves are accepted.
	for _, tc := range []struct {
		wire  string
		limit uint32
	}{
		{"00 00 00 00 10 00 00 02 00", 512},
		{"00 00 00 00 02 01 00 00 00", maxPayload},
		{"00 00 00 00 02 01 00 00 00", 1 << 31},
		{"00 00 00 00 03 00 00 00 00", 0},
	} {
		if _, err := parseHeader(codecHex(t, tc.wire), tc.limit); err != nil {
			t.Errorf("parseHeader(%s, limit %d) = %v, want accepted", tc.wire, tc.limit, err)
		}
	}
}

// codecErrReader returns data, then err.
type codecErrReader struct {
	data []byte
	err  error
}

func (r *codecErrReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestFrameReaderRejects(t *testing.T) {
	hdr5 := "00 00 00 01 02 00 00 00 05"
	tests := []struct {
		name  string
		wire  string
		limit uint32
		want  error
	}{
		{"clean EOF", "", 0, io.EOF},
		{"1 header byte", "00", 0, errTruncatedHeader},
		{"4 header bytes", "00 00 00 01", 0, errTruncatedHeader},
		{"8 header bytes", "00 00 00 01 02 00 00 00", 0, errTruncatedHeader},
		{"unknown type 0x00", "00 00 00 01 00 00 00 00 00", 0, errUnknownFrame},
		{"unknown type 0x0c", "00 00 00 01 0c 00 00 00 00", 0, errUnknownFrame},
		{"unknown type 0xff", "00 00 00 01 ff 00 00 00 00", 0, errUnknownFrame},
		{"above maxPayload, default limit", "00 00 00 01 02 01 00 00 01", 0, errFrameTooLarge},
		{"above maxPayload, Limit above maxPayload", "00 00 00 01 02 01 00 00 01", 1 << 30, errFrameTooLarge},
		{"above Limit", "00 00 00 00 10 00 00 02 01", 512, errFrameTooLarge},
		{"above Limit of 1", "00 00 00 00 02 00 00 00 02 aa bb", 1, errFrameTooLarge},
		{"payload missing", hdr5, 0, io.ErrUnexpectedEOF},
		{"payload short", hdr5 + " 68 65 6c", 0, io.ErrUnexpectedEOF},
		{"payload one byte short", hdr5 + " 68 65 6c 6c", 0, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wire := codecHex(t, tc.wire)
			for _, mode := range []string{"ReadFrame", "ReadPayloadInto"} {
				for _, wrap := range []string{"plain", "one-byte"} {
					var r io.Reader = bytes.NewReader(wire)
					if wrap == "one-byte" {
						r = iotest.OneByteReader(r)
					}
					fr := newFrameReader(r)
					fr.Limit = tc.limit
					var err error
					if mode == "ReadFrame" {
						var p []byte
						_, p, err = fr.ReadFrame()
						if err != nil && p != nil {
							t.Errorf("%s/%s: payload %q returned with error %v", mode, wrap, p, err)
						}
					} else {
						var h frameHeader
						h, err = fr.ReadHeader()
						if err == nil {
							err = fr.ReadPayloadInto(make([]byte, h.Length))
						}
					}
					if tc.want == io.EOF {
						if err != io.EOF {
							t.Errorf("%s/%s: err = %v, want exactly io.EOF", mode, wrap, err)
						}
					} else if !errors.Is(err, tc.want) {
						t.Errorf("%s/%s: err = %v, want %v", mode, wrap, err, tc.want)
					}
				}
			}
		})
	}

	t.Run("reader error is passed through", func(t *testing.T) {
		for _, wire := range []string{"", "00 00 00", hdr5 + " 68 65"} {
			fr := newFrameReader(&codecErrReader{data: codecHex(t, wire), err: errCodecWrite})
			_, _, err := fr.ReadFrame()
			if !errors.Is(err, errCodecWrite) {
				t.Errorf("after %q: err = %v, want the reader's error", wire, err)
			}
		}
	})
}

func TestFrameReaderReusesBuffer(t *testing.T) {
	sizes := []int{4096, 1, 100, 4096, 0, 17, 4000, 2048}
	var wire []byte
	for i, n := range sizes {
		wire = appendFrame(wire, uint32(i+1), frameData, codecPayload(n, byte(i)))
	}
	fr := newFrameReader(bytes.NewReader(wire))
	var first *byte
	for i, n := range sizes {
		h, p, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if h.StreamID != uint32(i+1) || len(p) != n {
			t.Fatalf("frame %d: header %+v, %d payload bytes; want stream %d, %d bytes", i, h, len(p), i+1, n)
		}
		if !bytes.Equal(p, codecPayload(n, byte(i))) {
			t.Fatalf("frame %d: payload differs", i)
		}
		if n == 0 {
			continue
		}
		if first == nil {
			first = unsafe.SliceData(p)
		} else if unsafe.SliceData(p) != first {
			t.Errorf("frame %d (%d bytes) got a new buffer; want the reader's buffer reused", i, n)
		}
		if cap(p) < 4096 {
			t.Errorf("frame %d: cap %d, want the 4096-byte buffer", i, cap(p))
		}
	}
	if _, _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

// codecRepeatReader returns data over and over again.
type codecRepeatReader struct {
	data []byte
	off  int
}

func (r *codecRepeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func TestFrameCodecZeroAllocs(t *testing.T) {
	for _, size := range []int{0, 5, 16 << 10} {
		payload := codecPayload(size, 9)
		t.Run(fmt.Sprintf("write/%d", size), func(t *testing.T) {
			bw := bufio.NewWriter(io.Discard)
			fw := newFrameWriter(bw)
			allocs := testing.AllocsPerRun(1000, func() {
				if err := fw.WriteFrame(3, frameData, payload); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("frameWriter.WriteFrame into a bufio.Writer: %v allocs per frame, want 0", allocs)
			}
		})
		t.Run(fmt.Sprintf("read/%d", size), func(t *testing.T) {
			fr := newFrameReader(&codecRepeatReader{data: appendFrame(nil, 3, frameDataBack, payload)})
			allocs := testing.AllocsPerRun(1000, func() {
				h, err := fr.ReadHeader()
				if err != nil {
					t.Fatal(err)
				}
				p, err := fr.ReadPayload(h)
				if err != nil || len(p) != size {
					t.Fatalf("ReadPayload: %d bytes, %v", len(p), err)
				}
			})
			if allocs != 0 {
				t.Errorf("frameReader.ReadHeader+ReadPayload: %v allocs per frame, want 0", allocs)
			}
		})
	}
}

func BenchmarkFrameWrite(b *testing.B) {
	payload := codecPayload(16<<10, 1)
	bw := bufio.NewWriterSize(io.Discard, 64<<10)
	fw := newFrameWriter(bw)
	b.ReportAllocs()
	b.SetBytes(int64(headerLen + len(payload)))
	for b.Loop() {
		if err := fw.WriteFrame(1, frameData, payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkFrameRead(b *testing.B) {
	payload := codecPayload(16<<10, 1)
	fr := newFrameReader(&codecRepeatReader{data: appendFrame(nil, 1, frameData, payload)})
	b.ReportAllocs()
	b.SetBytes(int64(headerLen + len(payload)))
	for b.Loop() {
		h, err := fr.ReadHeader()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fr.ReadPayload(h); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzFrameDecoder feeds arbitrary bytes to a frameReader with a Limit of
// 1 + limitSeed. Every frame returned must be valid and re-encode to exactly
// the bytes it was read from; the first error must be the one that the
// remaining bytes call for.
func FuzzFrameDecoder(f *testing.F) {
	var all []byte
	for i, ft := range codecFrameTypes {
		one := appendFrame(nil, uint32(i), ft.t, codecPayload(i*3, byte(i)))
		f.Add(one, uint16(512))
		all = append(all, one...)
		f.Add(appendFrame(nil, 0x01020304, ft.t, nil), uint16(0))
	}
	f.Add(all, uint16(1023))
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{0, 0, 0, 1}, uint16(10))
	f.Add([]byte{0, 0, 0, 1, 2, 0, 0, 0}, uint16(10))
	f.Add([]byte{0, 0, 0, 1, 2, 0, 0, 0, 5, 'a', 'b'}, uint16(10))
	f.Add([]byte{0, 0, 0, 1, 0x00, 0, 0, 0, 0}, uint16(10))
	f.Add([]byte{0, 0, 0, 1, 0x0B, 0, 0, 0, 0}, uint16(10))
	f.Add([]byte{0, 0, 0, 1, 0xFF, 0, 0, 0, 0}, uint16(10))
	f.Add([]byte{0, 0, 0, 1, 0x02, 1, 0, 0, 1}, uint16(0xFFFF))
	f.Add([]byte{0, 0, 0, 0, 0x10, 0, 0, 2, 1}, uint16(511))
	f.Add(append(appendFrame(nil, 1, frameData, []byte("abc")), 0, 0, 0, 1, 2, 0, 0, 0, 4), uint16(3))

	f.Fuzz(func(t *testing.T, data []byte, limitSeed uint16) {
		limit := uint32(limitSeed) + 1
		br := bytes.NewReader(data)
		fr := newFrameReader(br)
		fr.Limit = limit
		consumed := 0
		var reenc []byte
		for frames := 0; ; frames++ {
			h, p, err := fr.ReadFrame()
			if err != nil {
				rest := data[consumed:]
				switch {
				case len(rest) == 0:
					if err != io.EOF {
						t.Fatalf("at a frame boundary with no bytes left: %v, want io.EOF", err)
					}
				case len(rest) < headerLen:
					if !errors.Is(err, errTruncatedHeader) {
						t.Fatalf("%d bytes left: %v, want errTruncatedHeader", len(rest), err)
					}
				default:
					_, perr := parseHeader(rest[:headerLen], limit)
					switch {
					case perr != nil:
						if err.Error() != perr.Error() {
							t.Fatalf("ReadFrame error %q, parseHeader error %q", err, perr)
						}
						if !errors.Is(err, errUnknownFrame) && !errors.Is(err, errFrameTooLarge) {
							t.Fatalf("header error %v is neither unknown type nor too large", err)
						}
					case !errors.Is(err, io.ErrUnexpectedEOF):
						t.Fatalf("valid header, short payload: %v, want io.ErrUnexpectedEOF", err)
					}
				}
				break
			}
			if !h.Type.Known() {
				t.Fatalf("frame %d: unknown type %s accepted", frames, h.Type)
			}
			if h.Length > limit || int(h.Length) != len(p) {
				t.Fatalf("frame %d: header %+v with %d payload bytes, limit %d", frames, h, len(p), limit)
			}
			end := len(data) - br.Len()
			var out bytes.Buffer
			if err := newFrameWriter(&out).WriteFrame(h.StreamID, h.Type, p); err != nil {
				t.Fatalf("re-encoding %+v: %v", h, err)
			}
			if !bytes.Equal(out.Bytes(), data[consumed:end]) {
				t.Fatalf("frame %d re-encodes to %x, consumed %x", frames, out.Bytes(), data[consumed:end])
			}
			reenc = append(reenc, out.Bytes()...)
			consumed = end
		}
		if !bytes.Equal(reenc, data[:consumed]) {
			t.Fatalf("re-encoded frames differ from the consumed prefix")
		}
	})
}

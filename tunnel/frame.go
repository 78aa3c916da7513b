package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameType is the type byte of a frame.
type FrameType uint8

// The five base frames of the contract, then our extensions (see PROTOCOL.md).
const (
	FrameOpen      FrameType = 0x01 // edge→hub: open a stream; payload is the PROXY v1 header
	FrameData      FrameType = 0x02 // edge→hub: client bytes
	FrameClose     FrameType = 0x03 // edge→hub: the client finished sending (half-close)
	FrameDataBack  FrameType = 0x04 // hub→edge: target bytes
	FrameCloseBack FrameType = 0x05 // hub→edge: the target finished sending (half-close)

	FrameWindowUpdate FrameType = 0x06 // both: 4-byte credit increment for a stream
	FrameReset        FrameType = 0x07 // both: abort a stream; payload an optional reason
	FramePing         FrameType = 0x08 // both, stream 0: 8 opaque bytes
	FramePong         FrameType = 0x09 // both, stream 0: the ping's 8 bytes echoed
	FrameGoAway       FrameType = 0x0A // both, stream 0: the tunnel is closing; payload the reason
	FrameBlocked      FrameType = 0x0B // both: the sender has data for a stream but no credit; empty

	FrameHello     FrameType = 0x10 // edge→hub, stream 0: first frame after TLS
	FrameChallenge FrameType = 0x11 // hub→edge, stream 0: the hub's nonce
	FrameAuth      FrameType = 0x12 // edge→hub, stream 0: the edge's proof
	FrameAuthOK    FrameType = 0x13 // hub→edge, stream 0: the hub's proof
)

// HeaderLen is the size of a frame header.
const HeaderLen = 9

// MaxPayload is the largest payload the contract allows (16 MiB).
const MaxPayload = 16 << 20

var frameNames = map[FrameType]string{
	FrameOpen: "OPEN", FrameData: "DATA", FrameClose: "CLOSE", FrameDataBack: "DATA_BACK",
	FrameCloseBack: "CLOSE_BACK", FrameWindowUpdate: "WINDOW_UPDATE", FrameReset: "RESET",
	FramePing: "PING", FramePong: "PONG", FrameGoAway: "GOAWAY", FrameBlocked: "BLOCKED", FrameHello: "HELLO",
	FrameChallenge: "CHALLENGE", FrameAuth: "AUTH", FrameAuthOK: "AUTH_OK",
}

// String names the frame type.
func (t FrameType) String() string {
	if n, ok := frameNames[t]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", uint8(t))
}

// Known reports whether t is a frame type of this protocol version.
func (t FrameType) Known() bool {
	_, ok := frameNames[t]
	return ok
}

// FrameHeader is the fixed 9-byte prefix of every frame.
type FrameHeader struct {
	StreamID uint32
	Type     FrameType
	Length   uint32
}

// Errors of the frame codec.
var (
	ErrFrameTooLarge   = errors.New("frame payload exceeds the limit")
	ErrUnknownFrame    = errors.New("unknown frame type")
	ErrTruncatedHeader = errors.New("truncated frame header")
)

// PutHeader encodes h into b[:HeaderLen].
func PutHeader(b []byte, h FrameHeader) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b[0:4], h.StreamID)
	b[4] = byte(h.Type)
	binary.BigEndian.PutUint32(b[5:9], h.Length)
}

// ParseHeader decodes and checks a header: the type must be known and the
// length at most limit (itself at most MaxPayload).
func ParseHeader(b []byte, limit uint32) (FrameHeader, error) {
	if len(b) < HeaderLen {
		return FrameHeader{}, ErrTruncatedHeader
	}
	h := FrameHeader{
		StreamID: binary.BigEndian.Uint32(b[0:4]),
		Type:     FrameType(b[4]),
		Length:   binary.BigEndian.Uint32(b[5:9]),
	}
	if !h.Type.Known() {
		return h, fmt.Errorf("%w %s", ErrUnknownFrame, h.Type)
	}
	if limit > MaxPayload {
		limit = MaxPayload
	}
	if h.Length > limit {
		return h, fmt.Errorf("%w: %s frame of %d bytes, limit %d", ErrFrameTooLarge, h.Type, h.Length, limit)
	}
	return h, nil
}

// FrameReader reads frames from a stream. It owns one header buffer and one
// growable payload buffer, so reading allocates nothing in steady state.
type FrameReader struct {
	r     io.Reader
	hdr   [HeaderLen]byte
	buf   []byte
	Limit uint32 // largest payload accepted; MaxPayload when zero
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r} }

// ReadHeader reads and checks the next header. The caller must then consume
// exactly h.Length payload bytes, with ReadPayload or ReadPayloadInto.
func (fr *FrameReader) ReadHeader() (FrameHeader, error) {
	if n, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF || (err == io.EOF && n > 0) {
			return FrameHeader{}, ErrTruncatedHeader
		}
		return FrameHeader{}, err
	}
	limit := fr.Limit
	if limit == 0 {
		limit = MaxPayload
	}
	return ParseHeader(fr.hdr[:], limit)
}

// ReadPayload reads the payload of h into the reader's own buffer. The slice
// is valid until the next call.
func (fr *FrameReader) ReadPayload(h FrameHeader) ([]byte, error) {
	n := int(h.Length)
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n)
	}
	p := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return p, nil
}

// ReadPayloadInto reads the payload of h into p (len(p) must be h.Length).
func (fr *FrameReader) ReadPayloadInto(p []byte) error {
	_, err := io.ReadFull(fr.r, p)
	if err == io.EOF && len(p) > 0 {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ReadFrame reads a whole frame; the payload is valid until the next call.
func (fr *FrameReader) ReadFrame() (FrameHeader, []byte, error) {
	h, err := fr.ReadHeader()
	if err != nil {
		return h, nil, err
	}
	p, err := fr.ReadPayload(h)
	return h, p, err
}

// AppendFrame appends one encoded frame to dst.
func AppendFrame(dst []byte, id uint32, t FrameType, payload []byte) []byte {
	var h [HeaderLen]byte
	PutHeader(h[:], FrameHeader{StreamID: id, Type: t, Length: uint32(len(payload))})
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// FrameWriter encodes frames onto a writer (normally a *bufio.Writer). It
// keeps its header scratch space, so writing allocates nothing.
type FrameWriter struct {
	w   io.Writer
	hdr [HeaderLen]byte
}

// NewFrameWriter writes frames to w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes one frame with at most two writes.
func (fw *FrameWriter) WriteFrame(id uint32, t FrameType, payload []byte) error {
	if len(payload) > MaxPayload {
		return ErrFrameTooLarge
	}
	PutHeader(fw.hdr[:], FrameHeader{StreamID: id, Type: t, Length: uint32(len(payload))})
	if _, err := fw.w.Write(fw.hdr[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := fw.w.Write(payload)
	return err
}

package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// frameType is the type byte of a frame.
type frameType uint8

// The five base frames of the contract, then our extensions (see PROTOCOL.md).
const (
	frameOpen      frameType = 0x01 // edge→hub: open a stream; payload is the PROXY v1 header
	frameData      frameType = 0x02 // edge→hub: client bytes
	frameClose     frameType = 0x03 // edge→hub: the client finished sending (half-close)
	frameDataBack  frameType = 0x04 // hub→edge: target bytes
	frameCloseBack frameType = 0x05 // hub→edge: the target finished sending (half-close)

	frameWindowUpdate frameType = 0x06 // both: 4-byte credit increment for a stream
	frameReset        frameType = 0x07 // both: abort a stream; payload an optional reason
	framePing         frameType = 0x08 // both, stream 0: 8 opaque bytes
	framePong         frameType = 0x09 // both, stream 0: the ping's 8 bytes echoed
	frameGoAway       frameType = 0x0A // both, stream 0: the tunnel is closing; payload the reason
	frameBlocked      frameType = 0x0B // both: the sender has data for a stream but no credit; empty

	frameHello     frameType = 0x10 // edge→hub, stream 0: first frame after TLS
	frameChallenge frameType = 0x11 // hub→edge, stream 0: the hub's nonce
	frameAuth      frameType = 0x12 // edge→hub, stream 0: the edge's proof
	frameAuthOK    frameType = 0x13 // hub→edge, stream 0: the hub's proof

	frameAssign frameType = 0x14 // hub→edge, stream 0: the edge's ports and firewall (assign.go)
	frameBound  frameType = 0x15 // edge→hub, stream 0: the ports the edge has bound (assign.go)
	frameDrain  frameType = 0x19 // hub→edge, stream 0: the hub is stopping; payload the reason

	frameUDPOpen  frameType = 0x16 // edge→hub: open flow id (the stream-id field); payload its address block (flow.go)
	frameUDPData  frameType = 0x17 // both: one datagram of a flow
	frameUDPClose frameType = 0x18 // both: the flow ended; empty
)

// headerLen is the size of a frame header.
const headerLen = 9

// maxPayload is the largest payload the contract allows (16 MiB).
const maxPayload = 16 << 20

var frameNames = map[frameType]string{
	frameOpen: "OPEN", frameData: "DATA", frameClose: "CLOSE", frameDataBack: "DATA_BACK",
	frameCloseBack: "CLOSE_BACK", frameWindowUpdate: "WINDOW_UPDATE", frameReset: "RESET",
	framePing: "PING", framePong: "PONG", frameGoAway: "GOAWAY", frameBlocked: "BLOCKED", frameHello: "HELLO",
	frameChallenge: "CHALLENGE", frameAuth: "AUTH", frameAuthOK: "AUTH_OK", frameAssign: "ASSIGN", frameBound: "BOUND", frameDrain: "DRAIN",
	frameUDPOpen: "UDP_OPEN", frameUDPData: "UDP_DATA", frameUDPClose: "UDP_CLOSE",
}

// String names the frame type.
func (t frameType) String() string {
	if n, ok := frameNames[t]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", uint8(t))
}

// Known reports whether t is a frame type of this protocol version.
func (t frameType) Known() bool {
	_, ok := frameNames[t]
	return ok
}

// frameHeader is the fixed 9-byte prefix of every frame.
type frameHeader struct {
	StreamID uint32
	Type     frameType
	Length   uint32
}

// Errors of the frame codec.
var (
	errFrameTooLarge   = errors.New("frame payload exceeds the limit")
	errUnknownFrame    = errors.New("unknown frame type")
	errTruncatedHeader = errors.New("truncated frame header")
)

// putHeader encodes h into b[:headerLen].
func putHeader(b []byte, h frameHeader) {
	_ = b[headerLen-1]
	binary.BigEndian.PutUint32(b[0:4], h.StreamID)
	b[4] = byte(h.Type)
	binary.BigEndian.PutUint32(b[5:9], h.Length)
}

// parseHeader decodes and checks a header: the type must be known and the
// length at most limit (itself at most maxPayload).
func parseHeader(b []byte, limit uint32) (frameHeader, error) {
	if len(b) < headerLen {
		return frameHeader{}, errTruncatedHeader
	}
	h := frameHeader{
		StreamID: binary.BigEndian.Uint32(b[0:4]),
		Type:     frameType(b[4]),
		Length:   binary.BigEndian.Uint32(b[5:9]),
	}
	if !h.Type.Known() {
		return h, fmt.Errorf("%w %s", errUnknownFrame, h.Type)
	}
	if limit > maxPayload {
		limit = maxPayload
	}
	if h.Length > limit {
		return h, fmt.Errorf("%w: %s frame of %d bytes, limit %d", errFrameTooLarge, h.Type, h.Length, limit)
	}
	return h, nil
}

// frameReader reads frames from a stream. It owns one header buffer and one
// growable payload buffer, so reading allocates nothing in steady state.
type frameReader struct {
	r     io.Reader
	hdr   [headerLen]byte
	buf   []byte
	Limit uint32 // largest payload accepted; maxPayload when zero
}

// newFrameReader reads frames from r.
func newFrameReader(r io.Reader) *frameReader { return &frameReader{r: r} }

// ReadHeader reads and checks the next header. The caller must then consume
// exactly h.Length payload bytes, with ReadPayload or ReadPayloadInto.
func (fr *frameReader) ReadHeader() (frameHeader, error) {
	if n, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF || (err == io.EOF && n > 0) {
			return frameHeader{}, errTruncatedHeader
		}
		return frameHeader{}, err
	}
	limit := fr.Limit
	if limit == 0 {
		limit = maxPayload
	}
	return parseHeader(fr.hdr[:], limit)
}

// ReadPayload reads the payload of h into the reader's own buffer. The slice
// is valid until the next call.
func (fr *frameReader) ReadPayload(h frameHeader) ([]byte, error) {
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
func (fr *frameReader) ReadPayloadInto(p []byte) error {
	_, err := io.ReadFull(fr.r, p)
	if err == io.EOF && len(p) > 0 {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ReadFrame reads a whole frame; the payload is valid until the next call.
func (fr *frameReader) ReadFrame() (frameHeader, []byte, error) {
	h, err := fr.ReadHeader()
	if err != nil {
		return h, nil, err
	}
	p, err := fr.ReadPayload(h)
	return h, p, err
}

// frameWriter encodes frames onto a writer (normally a *bufio.Writer). It
// keeps its header scratch space, so writing allocates nothing.
type frameWriter struct {
	w   io.Writer
	hdr [headerLen]byte
}

// newFrameWriter writes frames to w.
func newFrameWriter(w io.Writer) *frameWriter { return &frameWriter{w: w} }

// WriteFrame writes one frame with at most two writes.
func (fw *frameWriter) WriteFrame(id uint32, t frameType, payload []byte) error {
	if len(payload) > maxPayload {
		return errFrameTooLarge
	}
	putHeader(fw.hdr[:], frameHeader{StreamID: id, Type: t, Length: uint32(len(payload))})
	if _, err := fw.w.Write(fw.hdr[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := fw.w.Write(payload)
	return err
}

package tunnel

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// protocolVersion is the version the handshake announces.
const protocolVersion = 1

// Capability bits exchanged in HELLO and CHALLENGE. A peer ignores bits it
// does not know.
const (
	// capWindowAutotune: the peer understands BLOCKED frames and grows a
	// stream's receive window when the stream's reader keeps up.
	capWindowAutotune uint32 = 1 << 0
	// capConnectionSet: HELLO ends with the edge's setPlace, so that one
	// edge can spread its streams over several connections.
	capConnectionSet uint32 = 1 << 1
	// capAssign: the peer sends (hub) or takes (edge) ASSIGN and BOUND: the
	// hub decides the edge's ports and firewall (assign.go).
	capAssign uint32 = 1 << 2
	// capUDP: the peer carries UDP flows (UDP_OPEN, UDP_DATA, UDP_CLOSE; flow.go).
	capUDP uint32 = 1 << 3
	// capDrain: the edge takes DRAIN, the hub's notice that it stops, and
	// sends new clients to its other hubs from then on.
	capDrain uint32 = 1 << 4

	// ourCaps is what this implementation announces.
	ourCaps = capWindowAutotune | capConnectionSet | capAssign | capUDP | capDrain

	// MaxTunnelConnections is the most connections one edge may use at once.
	MaxTunnelConnections = 16
)

// setPlace places one connection in the set of connections an edge runs
// at once. A connection with another set ID than the edge's current one
// replaces that whole set.
type setPlace struct {
	ID    uint64 // random for each set the edge starts
	Index uint8  // this connection's place, below Size
	Size  uint8  // connections in the set, 1..MaxTunnelConnections
}

// tunnelSetLen is the size of the setPlace trailer of HELLO.
const tunnelSetLen = 8 + 1 + 1

// peerParams is what a handshake learns about the peer's streams.
type peerParams struct {
	window uint32 // initial send credit of each stream
	caps   uint32
}

const (
	nonceLen      = 32
	proofLen      = sha256.Size
	maxEdgeIDLen  = 255
	preAuthLimit  = 512 // no frame before authentication may be larger
	exporterLabel = "EXPORTER-remoteingress-auth-v1"
	edgeProofTag  = "remoteingress v1 edge proof"
	hubProofTag   = "remoteingress v1 hub proof"
)

// Errors of the handshake. Their texts never contain a secret.
var (
	ErrAuthFailed   = errors.New("authentication failed")
	ErrHubNotProven = errors.New("the hub could not prove it knows this edge's secret (wrong secret on the hub, or a man in the middle)")
	errBadHandshake = errors.New("malformed handshake")
)

// helloMsg is the edge's first frame.
type helloMsg struct {
	Version uint16
	Caps    uint32
	Window  uint32 // the edge's per-stream receive window
	Nonce   [nonceLen]byte
	EdgeID  string
	Set     setPlace // sent when Caps has capConnectionSet; else {Size: 1}
}

// MarshalBinary encodes the HELLO payload:
// version u16 | caps u32 | window u32 | nonce [32] | idLen u8 | id, then, with
// capConnectionSet, set id u64 | index u8 | size u8.
func (h *helloMsg) MarshalBinary() ([]byte, error) {
	if len(h.EdgeID) == 0 || len(h.EdgeID) > maxEdgeIDLen {
		return nil, fmt.Errorf("edge id must be 1-%d bytes", maxEdgeIDLen)
	}
	b := make([]byte, 0, 2+4+4+nonceLen+1+len(h.EdgeID)+tunnelSetLen)
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = binary.BigEndian.AppendUint32(b, h.Caps)
	b = binary.BigEndian.AppendUint32(b, h.Window)
	b = append(b, h.Nonce[:]...)
	b = append(b, byte(len(h.EdgeID)))
	b = append(b, h.EdgeID...)
	if h.Caps&capConnectionSet != 0 {
		if !h.Set.valid() {
			return nil, fmt.Errorf("bad tunnel set %+v", h.Set)
		}
		b = binary.BigEndian.AppendUint64(b, h.Set.ID)
		b = append(b, h.Set.Index, h.Set.Size)
	}
	return b, nil
}

func (s setPlace) valid() bool {
	return s.Size >= 1 && s.Size <= MaxTunnelConnections && s.Index < s.Size
}

// UnmarshalBinary decodes a HELLO payload strictly (no trailing bytes).
func (h *helloMsg) UnmarshalBinary(b []byte) error {
	const fixed = 2 + 4 + 4 + nonceLen + 1
	if len(b) < fixed+1 {
		return errBadHandshake
	}
	h.Version = binary.BigEndian.Uint16(b[0:2])
	h.Caps = binary.BigEndian.Uint32(b[2:6])
	h.Window = binary.BigEndian.Uint32(b[6:10])
	copy(h.Nonce[:], b[10:10+nonceLen])
	n := int(b[fixed-1])
	trailer := 0
	if h.Caps&capConnectionSet != 0 {
		trailer = tunnelSetLen
	}
	if n == 0 || len(b) != fixed+n+trailer {
		return errBadHandshake
	}
	h.EdgeID = string(b[fixed : fixed+n])
	h.Set = setPlace{Size: 1}
	if trailer > 0 {
		t := b[fixed+n:]
		h.Set = setPlace{ID: binary.BigEndian.Uint64(t[0:8]), Index: t[8], Size: t[9]}
		if !h.Set.valid() {
			return errBadHandshake
		}
	}
	return nil
}

// challengeMsg is the hub's answer to HELLO.
type challengeMsg struct {
	Version uint16
	Caps    uint32
	Window  uint32 // the hub's per-stream receive window
	Nonce   [nonceLen]byte
}

// MarshalBinary encodes version u16 | caps u32 | window u32 | nonce [32].
func (c *challengeMsg) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 10+nonceLen)
	b = binary.BigEndian.AppendUint16(b, c.Version)
	b = binary.BigEndian.AppendUint32(b, c.Caps)
	b = binary.BigEndian.AppendUint32(b, c.Window)
	return append(b, c.Nonce[:]...), nil
}

// UnmarshalBinary decodes a CHALLENGE payload strictly.
func (c *challengeMsg) UnmarshalBinary(b []byte) error {
	if len(b) != 10+nonceLen {
		return errBadHandshake
	}
	c.Version = binary.BigEndian.Uint16(b[0:2])
	c.Caps = binary.BigEndian.Uint32(b[2:6])
	c.Window = binary.BigEndian.Uint32(b[6:10])
	copy(c.Nonce[:], b[10:])
	return nil
}

// proof computes HMAC-SHA256(secret, tag | exporter | edge nonce | hub nonce | idLen | id).
// The exporter value binds the proof to one TLS session, so it cannot be
// relayed into another one.
func proof(secret, tag string, exporter []byte, h *helloMsg, c *challengeMsg) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(tag))
	m.Write(exporter)
	m.Write(h.Nonce[:])
	m.Write(c.Nonce[:])
	m.Write([]byte{byte(len(h.EdgeID))})
	m.Write([]byte(h.EdgeID))
	return m.Sum(nil)
}

// handshakeConn is what the handshake needs of a transport before any
// stream exists: a byte stream for its frames, and the TLS state its proofs
// are bound to. A *tls.Conn is one; a QUIC connection's first stream with
// the connection's TLS state is another.
type handshakeConn interface {
	io.Reader
	io.Writer
	ConnectionState() tls.ConnectionState
}

func tlsExporter(conn handshakeConn) ([]byte, error) {
	cs := conn.ConnectionState()
	return cs.ExportKeyingMaterial(exporterLabel, nil, 32)
}

// handshakeIO reads and writes the small pre-authentication frames.
type handshakeIO struct {
	fr *frameReader
	bw *bufio.Writer
	fw *frameWriter
}

func newHandshakeIO(conn handshakeConn) *handshakeIO {
	bw := bufio.NewWriterSize(conn, 1024)
	fr := newFrameReader(conn)
	fr.Limit = preAuthLimit
	return &handshakeIO{fr: fr, bw: bw, fw: newFrameWriter(bw)}
}

func (h *handshakeIO) send(t frameType, payload []byte) error {
	if err := h.fw.WriteFrame(0, t, payload); err != nil {
		return err
	}
	return h.bw.Flush()
}

// expect reads one stream-0 frame of type want. A GOAWAY instead is reported
// with its reason.
func (h *handshakeIO) expect(want frameType) ([]byte, error) {
	hd, p, err := h.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	if hd.Type == frameGoAway {
		return nil, &remoteCloseError{Reason: sanitizeReason(p)}
	}
	if hd.Type != want || hd.StreamID != 0 {
		return nil, fmt.Errorf("%w: got %s on stream %d, want %s", errBadHandshake, hd.Type, hd.StreamID, want)
	}
	return p, nil
}

// remoteCloseError is a GOAWAY received from the peer.
type remoteCloseError struct{ Reason string }

func (e *remoteCloseError) Error() string { return "peer closed the tunnel: " + e.Reason }

// sanitizeReason makes a peer-supplied reason safe to log: printable ASCII, bounded.
func sanitizeReason(p []byte) string {
	if len(p) > 200 {
		p = p[:200]
	}
	out := make([]byte, 0, len(p))
	for _, c := range p {
		if c >= 0x20 && c < 0x7f {
			out = append(out, c)
		} else {
			out = append(out, '?')
		}
	}
	if len(out) == 0 {
		return "no reason given"
	}
	return string(out)
}

// edgeHandshake runs the edge's side after the TLS handshake, announcing
// caps (ourCaps but in tests). It returns the hub's window and capabilities
// once the hub has proven it knows the secret.
func edgeHandshake(conn handshakeConn, edgeID, secret string, window uint32, set setPlace, caps uint32) (peer peerParams, err error) {
	hio := newHandshakeIO(conn)
	hello := helloMsg{Version: protocolVersion, Caps: caps, Window: window, EdgeID: edgeID, Set: set}
	if _, err := rand.Read(hello.Nonce[:]); err != nil {
		return peerParams{}, err
	}
	hp, err := hello.MarshalBinary()
	if err != nil {
		return peerParams{}, err
	}
	if err := hio.send(frameHello, hp); err != nil {
		return peerParams{}, err
	}
	p, err := hio.expect(frameChallenge)
	if err != nil {
		return peerParams{}, err
	}
	var ch challengeMsg
	if err := ch.UnmarshalBinary(p); err != nil {
		return peerParams{}, err
	}
	if ch.Version < 1 {
		return peerParams{}, fmt.Errorf("%w: hub speaks protocol version %d", errBadHandshake, ch.Version)
	}
	exp, err := tlsExporter(conn)
	if err != nil {
		return peerParams{}, err
	}
	if err := hio.send(frameAuth, proof(secret, edgeProofTag, exp, &hello, &ch)); err != nil {
		return peerParams{}, err
	}
	p, err = hio.expect(frameAuthOK)
	if err != nil {
		return peerParams{}, err
	}
	if !hmac.Equal(p, proof(secret, hubProofTag, exp, &hello, &ch)) {
		return peerParams{}, ErrHubNotProven
	}
	return peerParams{window: ch.Window, caps: ch.Caps}, nil
}

// proofGate throttles the checking of proofs: it is called with the edge id
// of a proof before the proof is checked, may wait, and returns the function
// to call with the outcome.
type proofGate func(edgeID string, known bool) (settle func(ok bool), err error)

// hubAuthResult is what the hub learns from a successful handshake.
type hubAuthResult struct {
	edgeID string
	peer   peerParams
	set    setPlace
}

// hubHandshake runs the hub's side. lookup returns the secret of an allowed
// edge. A failure returns an error whose text is safe to log and which tells
// the operator why (unknown id vs. wrong proof); the edge is only told
// "authentication failed".
//
// gate, when not nil, is asked before the proof is checked (it may wait, or
// fail when it cannot let the proof be checked in time) and returns what to
// call with the outcome (which may hold the answer back); see throttle.go.
func hubHandshake(conn handshakeConn, window uint32, lookup func(id string) (string, bool), gate proofGate) (hubAuthResult, error) {
	hio := newHandshakeIO(conn)
	p, err := hio.expect(frameHello)
	if err != nil {
		return hubAuthResult{}, err
	}
	var hello helloMsg
	if err := hello.UnmarshalBinary(p); err != nil {
		return hubAuthResult{}, err
	}
	if hello.Version < 1 {
		return hubAuthResult{}, fmt.Errorf("%w: edge speaks protocol version %d", errBadHandshake, hello.Version)
	}
	ch := challengeMsg{Version: protocolVersion, Caps: ourCaps, Window: window}
	if _, err := rand.Read(ch.Nonce[:]); err != nil {
		return hubAuthResult{}, err
	}
	cp, _ := ch.MarshalBinary()
	if err := hio.send(frameChallenge, cp); err != nil {
		return hubAuthResult{}, err
	}
	p, err = hio.expect(frameAuth)
	if err != nil {
		return hubAuthResult{}, err
	}
	exp, err := tlsExporter(conn)
	if err != nil {
		return hubAuthResult{}, err
	}
	secret, known := lookup(hello.EdgeID)
	if !known {
		// Compute a proof anyway so an unknown id costs the same time.
		secret = "\x00unknown"
	}
	var settle func(ok bool)
	if gate != nil {
		if settle, err = gate(hello.EdgeID, known); err != nil {
			return hubAuthResult{edgeID: hello.EdgeID}, fmt.Errorf("proof for edge %q not checked: %w", hello.EdgeID, err)
		}
	}
	ok := hmac.Equal(p, proof(secret, edgeProofTag, exp, &hello, &ch)) && known
	if settle != nil {
		settle(ok)
	}
	if !ok {
		_ = hio.send(frameGoAway, []byte(ErrAuthFailed.Error()))
		why := "wrong secret"
		if !known {
			why = "unknown edge id"
		}
		return hubAuthResult{edgeID: hello.EdgeID}, fmt.Errorf("%w for edge %q: %s", ErrAuthFailed, hello.EdgeID, why)
	}
	if err := hio.send(frameAuthOK, proof(secret, hubProofTag, exp, &hello, &ch)); err != nil {
		return hubAuthResult{}, err
	}
	return hubAuthResult{edgeID: hello.EdgeID, peer: peerParams{window: hello.Window, caps: hello.Caps}, set: hello.Set}, nil
}

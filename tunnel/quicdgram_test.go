package tunnel

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/serve-zone/remoteingress/tunnel/proxyproto"
)

// dgramRecorder is a flowHandler that records what it is given.
type dgramRecorder struct {
	opened []uint32
	data   map[uint32][][]byte
	closed []uint32
}

func (r *dgramRecorder) handler() *flowHandler {
	r.data = map[uint32][][]byte{}
	return &flowHandler{
		opened: func(id uint32, _ proxyproto.Header) { r.opened = append(r.opened, id) },
		data:   func(id uint32, p []byte) { r.data[id] = append(r.data[id], append([]byte(nil), p...)) },
		closed: func(id uint32) { r.closed = append(r.closed, id) },
	}
}

// newDgramSide is the flow layer of a QUIC connection without the
// connection: what arrives is fed to it directly.
func newDgramSide(hub bool) (*quicDatagrams, *dgramRecorder) {
	rec := &dgramRecorder{}
	c := &quicConn{isHub: hub, peerCaps: capUDP, flows: rec.handler()}
	c.dg.init(c)
	return &c.dg, rec
}

func whole(flow uint32, p []byte) []byte {
	return append(appendDatagramHeader(nil, flow, 0, 0, 0), p...)
}

func fragment(flow uint32, seq uint64, i, n int, p []byte) []byte {
	return append(appendDatagramHeader(nil, flow, seq, i, n), p...)
}

func openFrame(t *testing.T, d *quicDatagrams, id uint32) error {
	t.Helper()
	p := appendFlowOpen(nil, proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.1:5000"), Destination: netip.MustParseAddrPort("198.51.100.1:53")})
	return d.ctrlFrame(frameHeader{StreamID: id, Type: frameUDPOpen, Length: uint32(len(p))}, p)
}

// Datagrams that overtake their flow's UDP_OPEN are held and delivered
// after it, in order; those of flows never opened are dropped when a later
// flow opens.
func TestQUICDatagramsBeforeTheirOpen(t *testing.T) {
	d, rec := newDgramSide(true)
	for _, b := range [][]byte{whole(1, []byte("a")), whole(2, []byte("x")), whole(1, []byte("b"))} {
		if err := d.received(b); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.data) != 0 {
		t.Fatalf("delivered before UDP_OPEN: %v", rec.data)
	}
	if err := openFrame(t, d, 1); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]byte{[]byte("a"), []byte("b")}, rec.data[1]); diff != "" {
		t.Fatalf("flow 1 (-want +got):\n%s", diff)
	}
	if err := openFrame(t, d, 3); err != nil { // flow 2 was skipped
		t.Fatal(err)
	}
	if rec.data[2] != nil || d.dropped.Load() != 1 || len(d.pending) != 0 {
		t.Fatalf("flow 2's datagram: delivered %v, dropped %d, pending %d", rec.data[2], d.dropped.Load(), len(d.pending))
	}
	if err := d.received(whole(3, []byte("c"))); err != nil || len(rec.data[3]) != 1 {
		t.Fatalf("flow 3 after its open: %v %v", err, rec.data[3])
	}
	if err := openFrame(t, d, 3); err == nil {
		t.Fatal("a second UDP_OPEN of flow 3 was taken")
	}
}

// A datagram in fragments arrives whole, in any order of its fragments;
// a newer datagram of the flow drops an incomplete older one.
func TestQUICDatagramFragments(t *testing.T) {
	d, rec := newDgramSide(true)
	if err := openFrame(t, d, 1); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 6551)[:MaxDatagram]
	const room = 1100
	n := (len(big) + room - 1) / room
	for _, i := range []int{3, 0, n - 1} {
		d.received(fragment(1, 7, i, n, big[i*room:min(len(big), (i+1)*room)]))
	}
	if len(rec.data[1]) != 0 {
		t.Fatal("delivered before all fragments arrived")
	}
	for i := 0; i < n; i++ {
		if err := d.received(fragment(1, 7, i, n, big[i*room:min(len(big), (i+1)*room)])); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.data[1]) != 1 || !bytes.Equal(rec.data[1][0], big) {
		t.Fatalf("reassembled %d datagrams", len(rec.data[1]))
	}
	// An incomplete datagram, then a newer one: the old one is lost.
	for _, b := range [][]byte{fragment(1, 8, 0, 2, []byte("old")), fragment(1, 9, 1, 2, []byte("-new")), fragment(1, 9, 0, 2, []byte("the"))} {
		if err := d.received(b); err != nil {
			t.Fatal(err)
		}
	}
	if got := rec.data[1][1:]; len(got) != 1 || string(got[0]) != "the-new" {
		t.Fatalf("got %q", got)
	}
	if d.dropped.Load() != 1 || d.partialBytes != 0 {
		t.Fatalf("dropped %d, partial %d (%d bytes)", d.dropped.Load(), len(d.partial), d.partialBytes)
	}
}

// Malformed datagrams are protocol errors; so are fragments that add up
// to more than a UDP datagram, and datagrams to an edge for flows it never
// opened.
func TestQUICHostileDatagrams(t *testing.T) {
	for _, tc := range []struct {
		name string
		hub  bool
		in   [][]byte
	}{
		{"empty", true, [][]byte{{}}},
		{"unknown kind", true, [][]byte{{0x07, 0x01, 'x'}}},
		{"flow 0", true, [][]byte{{dgWhole, 0x00, 'x'}}},
		{"truncated varint", true, [][]byte{{dgWhole, 0x40}}},
		{"fragment count 1", true, [][]byte{fragment(1, 1, 0, 1, []byte("x"))}},
		{"fragment count 65", true, [][]byte{fragment(1, 1, 0, 65, []byte("x"))}},
		{"fragment index past count", true, [][]byte{fragment(1, 1, 2, 2, []byte("x"))}},
		{"empty fragment", true, [][]byte{fragment(1, 1, 0, 2, nil)}},
		{"fragment header cut", true, [][]byte{{dgFragment, 0x01, 0x01, 0x00}}},
		{"fragments disagree on count", true, [][]byte{fragment(1, 1, 0, 2, []byte("a")), fragment(1, 1, 1, 3, []byte("b"))}},
		{"fragments too large", true, [][]byte{fragment(1, 1, 0, 2, make([]byte, 40000)), fragment(1, 1, 1, 2, make([]byte, 40000))}},
		{"to the edge, flow never opened", false, [][]byte{whole(5, []byte("x"))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newDgramSide(tc.hub)
			if tc.hub {
				openFrame(t, d, 1)
			}
			var err error
			for _, b := range tc.in {
				if err = d.received(b); err != nil {
					break
				}
			}
			var pe *protocolError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a protocol error", err)
			}
		})
	}
	// Without UDP, any datagram is a protocol error.
	c := &quicConn{isHub: true}
	c.dg.init(c)
	if err := c.dg.received(whole(1, []byte("x"))); err == nil {
		t.Fatal("a datagram on a connection without UDP was taken")
	}
}

// The datagrams held for flows not opened yet stay within their bounds.
func TestQUICPendingDatagramsBounded(t *testing.T) {
	d, _ := newDgramSide(true)
	p := make([]byte, 1000)
	for i := 0; i < 10*quicPendingCount; i++ {
		if err := d.received(whole(uint32(1+i%1000), p)); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.pending) > quicPendingCount || d.pendingBytes > quicPendingBytes {
		t.Fatalf("%d pending datagrams, %d bytes", len(d.pending), d.pendingBytes)
	}
	if d.dropped.Load() == 0 {
		t.Fatal("nothing counted as dropped")
	}
}

// What a QUIC connection drops of its own accord counts in the counter of
// whoever owns its flows (the hub's per-edge count, the edge's), beside
// its own; before CountDropsIn only in its own.
func TestQUICDropsCountInTheOwner(t *testing.T) {
	d, _ := newDgramSide(true)
	p := make([]byte, 1200)
	hold := func(n int) {
		for i := 0; i < n; i++ {
			if err := d.received(whole(uint32(1+i%1000), p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	hold(2 * quicPendingCount)
	before := d.dropped.Load()
	var owner atomic.Uint64
	d.c.CountDropsIn(&owner)
	hold(2 * quicPendingCount)
	if got := d.dropped.Load() - before; before == 0 || got == 0 || owner.Load() != got {
		t.Fatalf("dropped %d before and %d after CountDropsIn; the owner counted %d", before, got, owner.Load())
	}
}

func FuzzParseDatagram(f *testing.F) {
	f.Add(whole(1, []byte("hello")))
	f.Add(fragment(300, 1<<40, 3, 9, []byte("part")))
	f.Add([]byte{dgFragment, 0x41, 0x00, 0x05, 0x00, 0x02, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseDatagram(b)
		if err != nil {
			return
		}
		if m.flow == 0 || len(m.payload) > MaxDatagram {
			t.Fatalf("accepted %+v", m)
		}
		back := append(appendDatagramHeader(nil, m.flow, m.seq, int(m.index), map[bool]int{true: int(m.count), false: 0}[m.kind == dgFragment]), m.payload...)
		m2, err := parseDatagram(back)
		if err != nil || m2.flow != m.flow || m2.seq != m.seq || m2.index != m.index || m2.count != m.count || !bytes.Equal(m2.payload, m.payload) {
			t.Fatalf("round trip of %+v: %+v, %v", m, m2, err)
		}
	})
}

// FuzzQUICDatagrams feeds the hub's flow layer any sequence of datagrams
// and UDP_OPENs: no panic, and what it holds stays within its bounds.
func FuzzQUICDatagrams(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0xff, 1, 1, 1, 1, 0, 2, 'b'})
	f.Fuzz(func(t *testing.T, in []byte) {
		d, _ := newDgramSide(true)
		for len(in) > 2 {
			n := int(in[0]) % 64
			if n+1 > len(in) {
				n = len(in) - 1
			}
			chunk := in[1 : 1+n]
			in = in[1+n:]
			if len(chunk) > 0 && chunk[0] == 0xff && len(chunk) > 1 {
				_ = openFrame(t, d, uint32(chunk[1]))
				continue
			}
			if err := d.received(chunk); err != nil {
				return
			}
		}
		if len(d.pending) > quicPendingCount || d.pendingBytes > quicPendingBytes ||
			len(d.partial) > quicPartialCount || d.partialBytes > quicPartialBytes {
			t.Fatalf("held %d/%d B pending, %d/%d B partial", len(d.pending), d.pendingBytes, len(d.partial), d.partialBytes)
		}
	})
}

// A client datagram that fits one QUIC datagram of the path goes whole,
// not in fragments (loopback carries 1 200 bytes and more in one packet);
// one larger than any QUIC packet goes in fragments.
func TestQUICDatagramsGoWholeWhenTheyFit(t *testing.T) {
	r := startUDPRig(t, udpRigOptions{transport: TransportQUIC, mode: UDPProxyNone})
	c := r.client(t)
	fragmented := func() (n uint64) {
		for _, conns := range r.hub.edgesNow() {
			for _, tc := range conns {
				n += tc.(*quicConn).dg.fragmented.Load()
			}
		}
		return n
	}
	for _, size := range []int{1, 1200, 1350} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		for i := 0; i < 20; i++ {
			if got := roundTrip(t, c, p); !bytes.Equal(got, p) {
				t.Fatalf("%d-byte echo came back as %d bytes", size, len(got))
			}
		}
		// The hub sent the echoes: in one QUIC datagram each.
		if n := fragmented(); n != 0 {
			t.Fatalf("%d-byte datagrams: the hub sent %d of them in fragments", size, n)
		}
	}
	p := bytes.Repeat([]byte("x"), 8192)
	if got := roundTrip(t, c, p); !bytes.Equal(got, p) {
		t.Fatalf("8192-byte echo came back as %d bytes", len(got))
	}
	if n := fragmented(); n == 0 {
		t.Fatal("an 8192-byte datagram was not sent in fragments")
	}
}

// A datagram that arrives while its flow's UDP_OPEN is being handled (the
// hub dials the flow's socket) waits for it and comes after the datagrams
// held for the flow: none reaches the flows before the flow exists.
func TestQUICDatagramDuringItsOpen(t *testing.T) {
	d, _ := newDgramSide(true)
	var mu sync.Mutex
	var events []string
	inOpen, release := make(chan struct{}), make(chan struct{})
	d.c.flows = &flowHandler{
		opened: func(id uint32, _ proxyproto.Header) {
			close(inOpen)
			<-release
			mu.Lock()
			events = append(events, "opened")
			mu.Unlock()
		},
		data: func(id uint32, p []byte) {
			mu.Lock()
			events = append(events, string(p))
			mu.Unlock()
		},
		closed: func(uint32) {},
	}
	if err := d.received(whole(1, []byte("held"))); err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() { opened <- openFrame(t, d, 1) }()
	<-inOpen
	arrived := make(chan error, 1)
	go func() { arrived <- d.received(whole(1, []byte("during"))) }()
	time.Sleep(50 * time.Millisecond) // the datagram is in received (or delivered, wrongly) by now
	close(release)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if err := <-arrived; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"opened", "held", "during"}, events); diff != "" {
		t.Fatalf("what the flows saw (-want +got):\n%s", diff)
	}
}

// Package stuntest provides an in-process STUN server (RFC 5389 Binding over
// UDP) for tests. It answers with the XOR-MAPPED-ADDRESS of the sender and can
// be told to misbehave: stay silent, drop the first requests, answer with an
// error, answer RFC 3489 style, or send decoy datagrams before the answer.
package stuntest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/stun/v3"
)

// Behavior selects how the server reacts to Binding requests. The zero value
// answers every request correctly.
type Behavior struct {
	// Silent drops every request (they are still counted by Requests).
	Silent bool
	// DropFirst drops the first DropFirst requests the server ever receives,
	// to exercise client retransmission.
	DropFirst int
	// ErrorCode, when non-zero, makes the server answer with a Binding error
	// response carrying this code and ErrorReason.
	ErrorCode   int
	ErrorReason string
	// MappedOnly answers with MAPPED-ADDRESS instead of XOR-MAPPED-ADDRESS,
	// like an RFC 3489 server.
	MappedOnly bool
	// Before, if set, returns raw datagrams sent to the client, in order,
	// before the real answer to req (see Decoys).
	Before func(req *stun.Message, from netip.AddrPort) [][]byte
}

// Server is an in-process STUN server listening on one UDP socket.
type Server struct {
	conn *net.UDPConn
	wg   sync.WaitGroup

	mu       sync.Mutex
	behavior Behavior
	last     netip.AddrPort

	requests atomic.Int64
	answered atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// New starts a server on the UDP address addr (e.g. "127.0.0.2:0"; empty means
// "127.0.0.1:0") with behaviour b.
func New(addr string, b Behavior) (*Server, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("stuntest: bad address %q: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("stuntest: listen %s: %w", addr, err)
	}
	s := &Server{conn: conn, behavior: b}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr returns the "ip:port" the server listens on.
func (s *Server) Addr() string { return s.conn.LocalAddr().String() }

// SetBehavior replaces the behaviour for subsequent requests.
func (s *Server) SetBehavior(b Behavior) {
	s.mu.Lock()
	s.behavior = b
	s.mu.Unlock()
}

// Requests returns how many Binding requests the server received, including
// dropped ones.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Answered returns how many Binding requests the server answered (success or
// error response).
func (s *Server) Answered() int64 { return s.answered.Load() }

// LastClient returns the source address of the last Binding request received.
func (s *Server) LastClient() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Close stops the server and waits for its goroutine to exit. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.conn.Close()
		s.wg.Wait()
	})
	return s.closeErr
}

func (s *Server) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	req := new(stun.Message)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		req.Raw = append(req.Raw[:0], buf[:n]...)
		if !stun.IsMessage(req.Raw) || req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		nth := s.requests.Add(1)

		s.mu.Lock()
		b := s.behavior
		s.last = from
		s.mu.Unlock()

		if b.Silent || nth <= int64(b.DropFirst) {
			continue
		}
		if b.Before != nil {
			for _, d := range b.Before(req, from) {
				_, _ = s.conn.WriteToUDPAddrPort(d, from)
			}
		}
		res, err := Response(req.TransactionID, from, b)
		if err != nil {
			continue
		}
		// Count before sending: a client that has read the answer must
		// already see it counted.
		s.answered.Add(1)
		if _, err := s.conn.WriteToUDPAddrPort(res, from); err != nil {
			s.answered.Add(-1)
		}
	}
}

// Response builds the raw answer to a Binding request with transaction id,
// coming from client, according to b (ErrorCode, MappedOnly; the other fields
// are ignored). It is exported to let tests forge answers, e.g. with a wrong
// transaction id.
func Response(id [stun.TransactionIDSize]byte, client netip.AddrPort, b Behavior) ([]byte, error) {
	setters := []stun.Setter{stun.NewTransactionIDSetter(id)}
	switch {
	case b.ErrorCode != 0:
		setters = append(setters, stun.BindingError,
			stun.ErrorCodeAttribute{Code: stun.ErrorCode(b.ErrorCode), Reason: []byte(b.ErrorReason)})
	case b.MappedOnly:
		setters = append(setters, stun.BindingSuccess,
			&stun.MappedAddress{IP: client.Addr().AsSlice(), Port: int(client.Port())})
	default:
		setters = append(setters, stun.BindingSuccess,
			&stun.XORMappedAddress{IP: client.Addr().AsSlice(), Port: int(client.Port())})
	}
	setters = append(setters, stun.NewSoftware("stuntest"), stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, err
	}
	return m.Raw, nil
}

// DecoyAddr is the mapped address carried by the forged answers of Decoys; a
// client that returns it was fooled.
var DecoyAddr = netip.MustParseAddrPort("192.0.2.1:1")

// Decoys is a Behavior.Before hook that sends, before the real answer: a
// non-STUN datagram, a runt, a truncated response to the client's
// transaction, a success response for another transaction (mapping
// DecoyAddr), an error response for another transaction, a Binding request
// echoing the client's transaction id, an Allocate success response with the
// client's transaction id, and a Binding success response with the right
// transaction id but a corrupted FINGERPRINT.
func Decoys(req *stun.Message, _ netip.AddrPort) [][]byte {
	other := req.TransactionID
	other[0] ^= 0xff
	wrongOK, _ := Response(other, DecoyAddr, Behavior{})
	wrongErr, _ := Response(other, DecoyAddr, Behavior{ErrorCode: int(stun.CodeServerError), ErrorReason: "decoy"})
	echo, _ := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingRequest)
	allocate, _ := stun.Build(stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
		&stun.XORMappedAddress{IP: DecoyAddr.Addr().AsSlice(), Port: int(DecoyAddr.Port())})
	badFP, _ := Response(req.TransactionID, DecoyAddr, Behavior{})
	truncated := append([]byte(nil), badFP[:24]...) // header says longer: fails to decode
	badFP[len(badFP)-1] ^= 0xff                     // last byte of the FINGERPRINT value
	return [][]byte{
		[]byte("hello, this is not STUN"),
		req.Raw[:12],
		truncated,
		wrongOK,
		wrongErr,
		echo.Raw,
		allocate.Raw,
		badFP,
	}
}

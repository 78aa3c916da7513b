package stuntest

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// roundTrip sends one Binding request to srv and returns the decoded answer,
// or nil if none arrived within d.
func roundTrip(t *testing.T, srv *Server, d time.Duration) (*stun.Message, netip.AddrPort) {
	t.Helper()
	c, err := net.Dial("udp4", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := c.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return nil, local
	}
	res := new(stun.Message)
	if err := stun.Decode(buf[:n], res); err != nil {
		t.Fatal(err)
	}
	if res.TransactionID != req.TransactionID {
		t.Fatal("answer has another transaction id")
	}
	return res, local
}

func TestSTUNServer(t *testing.T) {
	srv, err := New("127.0.0.1:0", Behavior{})
	if err != nil {
		t.Fatal(err)
	}
	res, local := roundTrip(t, srv, 2*time.Second)
	if res == nil || res.Type != stun.BindingSuccess {
		t.Fatalf("answer = %v, want a Binding success", res)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(res); err != nil {
		t.Fatal(err)
	}
	if got := xor.String(); got != local.String() || srv.LastClient() != local {
		t.Fatalf("mapped %s, last client %v, want %v", got, srv.LastClient(), local)
	}
	if srv.Requests() != 1 || srv.Answered() != 1 {
		t.Fatalf("requests %d answered %d, want 1 and 1", srv.Requests(), srv.Answered())
	}

	srv.SetBehavior(Behavior{ErrorCode: 401, ErrorReason: "Unauthorized"})
	res, _ = roundTrip(t, srv, 2*time.Second)
	var ec stun.ErrorCodeAttribute
	if res == nil || res.Type != stun.BindingError || ec.GetFrom(res) != nil || ec.Code != 401 {
		t.Fatalf("answer = %v, want a Binding error 401", res)
	}

	srv.SetBehavior(Behavior{Silent: true})
	if res, _ := roundTrip(t, srv, 200*time.Millisecond); res != nil {
		t.Fatalf("silent server answered %v", res)
	}
	// The silent server counts the request when it reads it, which a loaded
	// machine may do after the client has given up waiting.
	for deadline := time.Now().Add(5 * time.Second); srv.Requests() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if srv.Requests() != 3 || srv.Answered() != 2 {
		t.Fatalf("requests %d answered %d, want 3 and 2", srv.Requests(), srv.Answered())
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

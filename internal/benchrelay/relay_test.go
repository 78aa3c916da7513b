package benchrelay

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// TestRelayHalfClose runs relay-in and relay-out in process in front of a
// target that answers only after EOF: the client's half-close must reach the
// target through TLS and the answer must come back.
func TestRelayHalfClose(t *testing.T) {
	target, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write(append([]byte("got "), b...))
	}()

	cert, err := NewCert()
	if err != nil {
		t.Fatal(err)
	}
	srvConf, err := ServerConfig(cert.CertPEM, cert.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cliConf, err := ClientConfig(cert.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outLn, _ := net.Listen("tcp4", "127.0.0.1:0")
	inLn, _ := net.Listen("tcp4", "127.0.0.1:0")
	go ServeOut(ctx, tls.NewListener(outLn, srvConf), target.Addr().String())
	go ServeIn(ctx, inLn, outLn.Addr().String(), cliConf)

	c, err := net.Dial("tcp4", inLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "got hello" {
		t.Fatalf("got %q, %v; want \"got hello\"", b, err)
	}
}

func TestClientConfigRejectsBadPin(t *testing.T) {
	if _, err := ClientConfig("abcd"); err == nil {
		t.Fatal("a short pin was accepted")
	}
}

package tunnel

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func TestEndToEndProxyHeaderAndEcho(t *testing.T) {
	r := startRig(t, rigOptions{})
	c := r.dial(t)
	msg := []byte("hello through the tunnel")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
	la := c.LocalAddr().(*net.TCPAddr)
	want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", la.Port, r.target.port)
	hs := r.target.seenHeaders()
	if len(hs) != 1 || hs[0] != want {
		t.Fatalf("target saw headers %q, want [%q]", hs, want)
	}
	r.hubEvents.wait(t, 0, 5*time.Second, named(EventStreamClosed))
	_ = bufio.NewReader
}

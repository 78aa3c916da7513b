package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a fake $NOTIFY_SOCKET at name and returns a reader of it.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading the fake notify socket: %v", err)
		}
		return string(buf[:n])
	}
}

func TestReadyAndStoppingOnAPathSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	read := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	if sent, err := Ready(); !sent || err != nil {
		t.Fatalf("Ready: %v, %v", sent, err)
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
	if sent, err := Stopping(); !sent || err != nil {
		t.Fatalf("Stopping: %v, %v", sent, err)
	}
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("got %q", got)
	}
}

func TestReloadingAndTheServiceMethods(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	read := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	var s Service
	s.Reloading()
	if got := read(); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("got %q", got)
	}
	s.Ready()
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
	s.Stopping()
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("got %q", got)
	}
}

func TestAbstractSocket(t *testing.T) {
	name := "remoteingress-sdnotify-test-" + strconv.Itoa(os.Getpid())
	read := listen(t, "\x00"+name)
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	if sent, err := Ready(); !sent || err != nil {
		t.Fatalf("Ready: %v, %v", sent, err)
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
}

func TestNoSocketIsANoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Ready(); sent || err != nil {
		t.Fatalf("Ready without NOTIFY_SOCKET: %v, %v", sent, err)
	}
}

func TestMissingSocketIsAnError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	if sent, err := Ready(); sent || err == nil {
		t.Fatalf("Ready to a missing socket: %v, %v", sent, err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative.sock")
	if _, err := Ready(); err == nil {
		t.Fatal("a relative NOTIFY_SOCKET is accepted")
	}
}

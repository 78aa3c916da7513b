// Package sdnotify tells systemd about the service's state (sd_notify(3)):
// a unit with Type=notify waits for READY=1 before it counts as started, and
// STOPPING=1 says a stop is under way. The socket is the unixgram socket
// named by $NOTIFY_SOCKET, a path or, starting with "@", an abstract name.
// Without $NOTIFY_SOCKET (not run by systemd) every call does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Ready sends READY=1: the service is up (listening). It reports whether a
// message was sent; the error is nil when there is no socket to send to.
func Ready() (bool, error) { return Notify("READY=1") }

// Stopping sends STOPPING=1: the service is shutting down.
func Stopping() (bool, error) { return Notify("STOPPING=1") }

// Reloading sends RELOADING=1 with MONOTONIC_USEC (which Type=notify-reload
// units want): a reload begins; Ready ends it.
func Reloading() (bool, error) {
	usec, ok := monotonicUsec()
	if !ok {
		return Notify("RELOADING=1")
	}
	return Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", usec))
}

// Service is Ready, Reloading and Stopping as methods, their results
// dropped (systemd not listening changes nothing for the service): the
// shape of standalone.Notifier.
type Service struct{}

// Ready sends READY=1.
func (Service) Ready() { _, _ = Ready() }

// Reloading sends RELOADING=1.
func (Service) Reloading() { _, _ = Reloading() }

// Stopping sends STOPPING=1.
func (Service) Stopping() { _, _ = Stopping() }

// Notify sends state, newline-separated VAR=value assignments, to
// $NOTIFY_SOCKET. It reports whether it sent anything.
func Notify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:] // abstract namespace
	} else if name[0] != '/' {
		return false, fmt.Errorf("NOTIFY_SOCKET %q is neither a path nor an abstract name", name)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}

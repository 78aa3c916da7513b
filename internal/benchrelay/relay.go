// Package benchrelay is the baseline the remoteingress benchmark compares the
// tunnel with: a naive TLS relay that opens one new TLS 1.3 connection per
// client connection (no multiplexing). The "in" side accepts plain TCP and
// dials the "out" side over TLS; the "out" side terminates TLS and dials the
// target over plain TCP. Both copy bytes with io.Copy, both ways, and pass
// half-closes on.
package benchrelay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// handshakeTimeout bounds a TLS handshake and a dial.
const handshakeTimeout = 10 * time.Second

// ServeIn accepts plain TCP connections on ln and relays each one over a new
// TLS connection to upstream until ctx ends or ln is closed.
func ServeIn(ctx context.Context, ln net.Listener, upstream string, conf *tls.Config) error {
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: handshakeTimeout}, Config: conf}
	return serve(ctx, ln, func(c net.Conn) {
		dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		up, err := dialer.DialContext(dctx, "tcp", upstream)
		cancel()
		if err != nil {
			abort(c)
			return
		}
		Pipe(c, up)
	})
}

// ServeOut accepts TLS connections on ln (a listener made by tls.NewListener)
// and relays each one to target over plain TCP until ctx ends or ln is closed.
func ServeOut(ctx context.Context, ln net.Listener, target string) error {
	dialer := &net.Dialer{Timeout: handshakeTimeout}
	return serve(ctx, ln, func(c net.Conn) {
		if tc, ok := c.(*tls.Conn); ok {
			hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				c.Close()
				return
			}
		}
		down, err := dialer.DialContext(ctx, "tcp", target)
		if err != nil {
			c.Close()
			return
		}
		Pipe(c, down)
	})
}

// serve runs handle for every accepted connection, each in its own goroutine.
func serve(ctx context.Context, ln net.Listener, handle func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off a little and keep serving.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go handle(c)
	}
}

// closeWriter is a connection whose write side can be shut down alone
// (*net.TCPConn, *tls.Conn).
type closeWriter interface {
	CloseWrite() error
}

// Pipe copies a→b and b→a with io.Copy. When one direction reaches EOF it
// shuts down the write side of the other connection (half-close) and the
// other direction goes on; an error in either direction closes both at once.
// Pipe returns when both directions are done, with both connections closed.
func Pipe(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			abort(a)
			abort(b)
		})
	}
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			closeBoth()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		closeBoth()
	}
	wg.Add(2)
	go half(b, a)
	go half(a, b)
	wg.Wait()
	a.Close()
	b.Close()
}

// abort closes c; a TCP connection is reset (SO_LINGER 0) so the peer learns
// of the failure at once.
func abort(c net.Conn) {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	raw.Close()
}

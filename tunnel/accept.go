package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// isTemporaryAcceptError reports accept failures that pass: out of file
// descriptors or memory, or a connection aborted before it was accepted.
func isTemporaryAcceptError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// acceptConns accepts on ln and hands each connection to handle, in this
// goroutine, until ctx ends or the listener fails for good. Passing failures
// (out of file descriptors, an aborted connection) are retried with a
// backoff from 5 ms to 1 s instead of spinning.
func acceptConns(ctx context.Context, ln net.Listener, log *slog.Logger, handle func(net.Conn)) {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err == nil {
			delay = 0
			handle(conn)
			continue
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return // closed on purpose (Close, Shutdown)
		}
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) && !isTemporaryAcceptError(err) {
			log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
			return
		}
		delay = min(max(delay*2, 5*time.Millisecond), time.Second)
		log.Warn("accept failed, retrying", "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ioTimeout bounds every blocking client read or write, so a broken set-up
// fails the row instead of hanging the bench.
const ioTimeout = 30 * time.Second

var clientDialer = net.Dialer{Timeout: 10 * time.Second}

// dialRole connects to addr and sends the target request for role, followed
// by extra, in one write.
func dialRole(ctx context.Context, addr string, role byte, param uint64, extra []byte) (*net.TCPConn, error) {
	c, err := clientDialer.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	req := make([]byte, requestLen, requestLen+len(extra))
	req[0] = role
	binary.BigEndian.PutUint64(req[1:], param)
	req = append(req, extra...)
	tc.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := tc.Write(req); err != nil {
		tc.Close()
		return nil, err
	}
	return tc, nil
}

// bulkUp sends for d to a sink, half-closes and waits for the target's byte
// count. It returns the bytes the target received and the time from the
// first byte to the answer.
func bulkUp(ctx context.Context, addr string, d time.Duration) (int64, time.Duration, error) {
	c, err := dialRole(ctx, addr, roleSink, 0, nil)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	start := time.Now()
	end := start.Add(d)
	var sent int64
	for time.Now().Before(end) && ctx.Err() == nil {
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return 0, 0, fmt.Errorf("sending: %w", err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		return 0, 0, err
	}
	var ans [8]byte
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		return 0, 0, fmt.Errorf("reading the sink's count: %w", err)
	}
	elapsed := time.Since(start)
	got := int64(binary.BigEndian.Uint64(ans[:]))
	if got != sent {
		return got, elapsed, fmt.Errorf("sent %d bytes, the target received %d", sent, got)
	}
	return got, elapsed, ctx.Err()
}

// bulkDown asks a source for d of data and reads it to EOF. It returns the
// bytes read and the time from the request to EOF.
func bulkDown(ctx context.Context, addr string, d time.Duration) (int64, time.Duration, error) {
	start := time.Now()
	c, err := dialRole(ctx, addr, roleSource, uint64(d.Milliseconds()), nil)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	var got int64
	for {
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		n, err := c.Read(buf)
		got += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return got, time.Since(start), fmt.Errorf("receiving: %w", err)
		}
		if ctx.Err() != nil {
			return got, time.Since(start), ctx.Err()
		}
	}
	return got, time.Since(start), nil
}

// roundTrip sends buf (64 bytes) and reads the echo back into buf.
func roundTrip(c net.Conn, buf []byte) error {
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err := io.ReadFull(c, buf)
	return err
}

// openEcho opens an echo connection and completes one round trip, so the
// whole path to the target exists.
func openEcho(ctx context.Context, addr string) (*net.TCPConn, error) {
	msg := make([]byte, echoLen)
	c, err := dialRole(ctx, addr, roleEcho, 0, msg)
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c, msg); err != nil {
		c.Close()
		return nil, fmt.Errorf("first round trip: %w", err)
	}
	return c, nil
}

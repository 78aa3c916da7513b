package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The target speaks a tiny protocol: after the PROXY v1 header (tunnel only)
// the client sends a 9-byte request, a role byte and a big-endian u64
// parameter, then the role runs.
const (
	roleSink   = 's' // read until EOF, then answer the byte count (u64)
	roleSource = 'o' // write for param milliseconds, then half-close
	roleEcho   = 'e' // answer every 64-byte message with itself
	roleStall  = 'x' // write until the writes fail, counting what went out

	requestLen = 9
	echoLen    = 64
)

// target is a server in the bench process that every set-up's connections
// end at. One listener per set-up: the tunnel's expects the PROXY v1 header
// the hub writes, the others get none.
type target struct {
	ln       net.Listener
	proxy    bool // a PROXY v1 header comes first
	wantPort int  // destination port the header must carry (proxy only)

	accepted     atomic.Int64
	active       atomic.Int64
	headerErrors atomic.Int64
	stallWritten atomic.Int64

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	lastError string
	wg        sync.WaitGroup
}

// listenTarget listens on addr and serves until close.
func listenTarget(addr string, proxy bool) (*target, error) {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, err
	}
	return serveTarget(ln, proxy), nil
}

// serveTarget serves on ln until close.
func serveTarget(ln net.Listener, proxy bool) *target {
	t := &target{ln: ln, proxy: proxy, conns: map[net.Conn]struct{}{}}
	t.wantPort = t.port() // the hub dials targetHost:<edge listen port>, the same number
	t.wg.Add(1)
	go t.acceptLoop()
	return t
}

// port is the listener's port.
func (t *target) port() int { return t.ln.Addr().(*net.TCPAddr).Port }

func (t *target) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and the like
			continue
		}
		t.accepted.Add(1)
		t.active.Add(1)
		t.mu.Lock()
		t.conns[c] = struct{}{}
		t.mu.Unlock()
		t.wg.Add(1)
		go t.serve(c)
	}
}

// close stops listening, closes every connection and waits for them.
func (t *target) close() {
	t.ln.Close()
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// fail records a protocol error of the target side.
func (t *target) fail(err error) {
	t.mu.Lock()
	t.lastError = err.Error()
	t.mu.Unlock()
}

func (t *target) serve(c net.Conn) {
	defer func() {
		c.Close()
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		t.active.Add(-1)
		t.wg.Done()
	}()
	br := bufio.NewReaderSize(c, 64<<10)
	if t.proxy {
		line, err := br.ReadSlice('\n')
		if err != nil {
			t.headerErrors.Add(1)
			return
		}
		if err := checkProxyHeader(string(line), t.wantPort); err != nil {
			t.headerErrors.Add(1)
			t.fail(err)
			return
		}
	}
	var req [requestLen]byte
	if _, err := io.ReadFull(br, req[:]); err != nil {
		return
	}
	param := binary.BigEndian.Uint64(req[1:])
	switch req[0] {
	case roleSink:
		t.sink(c, br)
	case roleSource:
		t.source(c, br, time.Duration(param)*time.Millisecond)
	case roleEcho:
		t.echo(c, br)
	case roleStall:
		t.stall(c)
	default:
		t.fail(fmt.Errorf("unknown role %q", req[0]))
	}
}

func (t *target) sink(c net.Conn, br *bufio.Reader) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := br.Read(buf)
		n += int64(k)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			break
		}
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], uint64(n))
	c.Write(out[:])
}

func (t *target) source(c net.Conn, br *bufio.Reader, d time.Duration) {
	buf := make([]byte, 128<<10)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.Copy(io.Discard, br) // until the client closes
}

func (t *target) echo(c net.Conn, br *bufio.Reader) {
	buf := make([]byte, echoLen)
	for {
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

func (t *target) stall(c net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Write(buf)
		t.stallWritten.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// checkProxyHeader checks the PROXY v1 line the hub wrote: TCP4 from a
// loopback client to destination port want.
func checkProxyHeader(line string, want int) error {
	if !strings.HasSuffix(line, "\r\n") {
		return fmt.Errorf("PROXY header without CRLF: %q", line)
	}
	f := strings.Fields(strings.TrimSuffix(line, "\r\n"))
	if len(f) != 6 || f[0] != "PROXY" || f[1] != "TCP4" {
		return fmt.Errorf("bad PROXY header %q", line)
	}
	if ip := net.ParseIP(f[2]); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("PROXY header source %q is not a loopback address", f[2])
	}
	if ip := net.ParseIP(f[3]); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("PROXY header destination %q is not a loopback address", f[3])
	}
	if p, err := strconv.Atoi(f[4]); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("PROXY header source port %q", f[4])
	}
	if p, err := strconv.Atoi(f[5]); err != nil || p != want {
		return fmt.Errorf("PROXY header destination port %q, want %d", f[5], want)
	}
	return nil
}

// Package mgmtclient drives a remoteingress-bin --management process the way
// @push.rocks/smartrust's RustBridge does: request lines on its stdin, and the
// answers, matched by id, from the lines its owner reads from its stdout.
// The owner keeps reading stdout (and handles the events itself), so the
// package needs no goroutine of its own.
package mgmtclient

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Line is one decoded stdout line: an answer (ID set) or an event.
type Line struct {
	ID      *string         `json:"id"`
	Success *bool           `json:"success"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Event   string          `json:"event"`
	Data    json.RawMessage `json:"data"`
}

// Decode parses one stdout line.
func Decode(line []byte) (Line, error) {
	var l Line
	err := json.Unmarshal(line, &l)
	return l, err
}

// RemoteError is an answer with success:false.
type RemoteError struct {
	Method  string
	Message string
}

func (e *RemoteError) Error() string { return e.Method + " failed: " + e.Message }

// Client sends requests and matches their answers.
type Client struct {
	wmu    sync.Mutex // one request line at a time
	w      io.Writer
	nextID atomic.Int64

	mu      sync.Mutex
	pending map[string]chan answer
	failed  error // set by Fail: every call fails with it
}

type answer struct {
	result  json.RawMessage
	failure *string // the error of a success:false answer
	err     error   // from Fail
}

// New sends requests to w, the process's stdin.
func New(w io.Writer) *Client {
	return &Client{w: w, pending: map[string]chan answer{}}
}

// Call sends one request and waits up to timeout for its answer. A
// success:false answer is a *RemoteError.
func (c *Client) Call(method string, params any, timeout time.Duration) (json.RawMessage, error) {
	if params == nil {
		params = map[string]any{}
	}
	id := "req_" + strconv.FormatInt(c.nextID.Add(1), 10)
	line, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	ch := make(chan answer, 1)
	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", method, c.failed)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	c.wmu.Lock()
	_, err = c.w.Write(append(line, '\n'))
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("writing %s: %w", method, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-ch:
		switch {
		case a.failure != nil:
			return nil, &RemoteError{Method: method, Message: *a.failure}
		case a.err != nil:
			return nil, fmt.Errorf("%s: %w", method, a.err)
		}
		return a.result, nil
	case <-t.C:
		c.forget(id)
		return nil, fmt.Errorf("no answer to %s within %v", method, timeout)
	}
}

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// Answer hands an answer line to the call waiting for it; an answer nobody
// waits for (any more) is dropped.
func (c *Client) Answer(l Line) {
	if l.ID == nil {
		return
	}
	c.mu.Lock()
	ch := c.pending[*l.ID]
	delete(c.pending, *l.ID)
	c.mu.Unlock()
	if ch == nil {
		return
	}
	a := answer{result: l.Result}
	if l.Success == nil || !*l.Success {
		a.failure = &l.Error
	}
	ch <- a
}

// Fail ends every waiting call, and every later one, with err: the process
// is gone.
func (c *Client) Fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failed = err
	for id, ch := range c.pending {
		ch <- answer{err: err}
		delete(c.pending, id)
	}
}

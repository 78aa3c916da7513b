package mgmtclient

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// fakeEngine reads request lines from the client and hands each decoded
// request to reply, whose answer lines go back through Answer.
func fakeEngine(t *testing.T, c *Client, r io.Reader, reply func(id, method string) string) {
	t.Helper()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var req struct{ ID, Method string }
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				t.Errorf("request line %q: %v", sc.Text(), err)
				return
			}
			out := reply(req.ID, req.Method)
			if out == "" {
				continue // never answered
			}
			l, err := Decode([]byte(out))
			if err != nil {
				t.Errorf("answer line %q: %v", out, err)
				return
			}
			c.Answer(l)
		}
	}()
}

func TestCallMatchesAnswersByID(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	c := New(pw)
	fakeEngine(t, c, pr, func(id, method string) string {
		switch method {
		case "ping":
			return `{"id":"` + id + `","success":true,"result":{"pong":true}}`
		case "startHub":
			return `{"id":"` + id + `","success":false,"error":"hub is already running"}`
		}
		return ""
	})
	res, err := c.Call("ping", nil, 5*time.Second)
	if err != nil || string(res) != `{"pong":true}` {
		t.Fatalf("ping = %s, %v", res, err)
	}
	_, err = c.Call("startHub", map[string]any{"tunnelPort": 0}, 5*time.Second)
	var re *RemoteError
	if !errors.As(err, &re) || re.Method != "startHub" || re.Message != "hub is already running" {
		t.Fatalf("startHub error = %v, want a RemoteError with the engine's message", err)
	}
	start := time.Now()
	_, err = c.Call("getHubStatus", nil, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no answer to getHubStatus") || time.Since(start) > 2*time.Second {
		t.Fatalf("unanswered call = %v after %v, want a timeout at 100 ms", err, time.Since(start))
	}
	c.mu.Lock()
	left := len(c.pending)
	c.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d calls still pending", left)
	}
}

func TestFailEndsWaitingAndLaterCalls(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	c := New(pw)
	fakeEngine(t, c, pr, func(string, string) string { return "" })
	done := make(chan error, 1)
	go func() {
		_, err := c.Call("stopHub", nil, 10*time.Second)
		done <- err
	}()
	gone := errors.New("engine exited")
	for {
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.Fail(gone)
	if err := <-done; !errors.Is(err, gone) {
		t.Fatalf("waiting call = %v, want %v", err, gone)
	}
	if _, err := c.Call("ping", nil, time.Second); !errors.Is(err, gone) {
		t.Fatalf("later call = %v, want %v", err, gone)
	}
}

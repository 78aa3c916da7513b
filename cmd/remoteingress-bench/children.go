package main

import (
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// child is one process the bench started: a hub or edge of the binary, or a
// relay. Its stderr is drained into a stderrLog; its stdout belongs to
// whoever started it and must be read until EOF.
type child struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *stderrLog

	readers sync.WaitGroup // stdout and stderr readers; Wait must follow them
	done    chan struct{}  // closed once the process has been waited for
	waitErr error

	stopOnce sync.Once
	stopInfo stopInfo
	killed   bool // by the bench on purpose (kill), before stop
}

// stopInfo says how a child ended.
type stopInfo struct {
	Name     string `json:"name"`
	Pid      int    `json:"pid"`
	ExitCode int    `json:"exitCode"`
	Signal   string `json:"signal,omitempty"`
	Killed   bool   `json:"killed"` // it did not exit on stdin EOF and SIGTERM
	// KilledByBench: the bench sent it SIGKILL on purpose (the several-hubs
	// failover row); its exit code is not a problem.
	KilledByBench bool    `json:"killedByBench,omitempty"`
	Seconds       float64 `json:"secondsToExit"`
	Warnings      int     `json:"stderrWarnings"` // not counting expected ones
	Errors        int     `json:"stderrErrors"`
	Expected      int     `json:"stderrExpectedWarnings"`
}

// children is every process the bench started, so they can all be stopped.
type children struct {
	mu   sync.Mutex
	list []*child
}

func newChildren() *children { return &children{} }

// start runs path with args; onStdout reads the child's stdout (and must
// read until EOF). The child gets SIGKILL if the bench dies (Pdeathsig) and
// stops on its own when its stdin closes.
func (ks *children) start(name string, onStdout func(io.Reader), path string, args ...string) (*child, error) {
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = childSysProcAttr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	c := &child{
		name: name, cmd: cmd, stdin: stdin,
		stderr: newStderrLog(name), done: make(chan struct{}),
	}
	c.readers.Add(2)
	go func() {
		defer c.readers.Done()
		c.stderr.drain(stderr)
	}()
	go func() {
		defer c.readers.Done()
		onStdout(stdout)
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		c.readers.Wait()
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	ks.mu.Lock()
	ks.list = append(ks.list, c)
	ks.mu.Unlock()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill sends the child SIGKILL on purpose and waits for it to end; it
// returns when the signal was sent.
func (c *child) kill() (time.Time, error) {
	c.killed = true
	err := c.cmd.Process.Signal(syscall.SIGKILL)
	at := time.Now()
	if err != nil {
		return at, err
	}
	select {
	case <-c.done:
		return at, nil
	case <-time.After(10 * time.Second):
		return at, fmt.Errorf("%s (pid %d) still running 10 s after SIGKILL", c.name, c.pid())
	}
}

// stop closes the child's stdin (the graceful way for every child here),
// then sends SIGTERM after 5 s and SIGKILL after 8 s, and waits for it.
func (c *child) stop() stopInfo {
	c.stopOnce.Do(func() {
		start := time.Now()
		c.stdin.Close()
		info := stopInfo{Name: c.name, Pid: c.pid(), KilledByBench: c.killed}
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.done:
			case <-time.After(3 * time.Second):
				info.Killed = true
				c.cmd.Process.Kill()
				<-c.done
			}
		}
		info.Seconds = time.Since(start).Seconds()
		info.ExitCode = c.cmd.ProcessState.ExitCode()
		if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			info.Signal = ws.Signal().String()
		}
		info.Warnings, info.Errors, info.Expected = c.stderr.counts()
		c.stopInfo = info
	})
	return c.stopInfo
}

// stopAll stops every child, in parallel, and waits for all of them.
func (ks *children) stopAll() []stopInfo {
	ks.mu.Lock()
	list := append([]*child(nil), ks.list...)
	ks.mu.Unlock()
	infos := make([]stopInfo, len(list))
	var wg sync.WaitGroup
	for i, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			infos[i] = c.stop()
		}()
	}
	wg.Wait()
	return infos
}

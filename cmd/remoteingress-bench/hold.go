package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// holdCmd is the hidden subcommand of the process that holds the client
// side of the memory row's idle connections, so the bench process only
// holds the target side (two descriptors per connection in one process
// would need twice the RLIMIT_NOFILE).
const holdCmd = "hold"

// holdMain opens connections to -addr on request: each stdin line "open N"
// opens N more (one round trip each) and answers "held <total> <failures>
// <first error>". At stdin EOF it closes them all and exits.
func holdMain(args []string) int {
	fs := flag.NewFlagSet(holdCmd, flag.ContinueOnError)
	addr := fs.String("addr", "", "where to connect")
	workers := fs.Int("workers", 8, "parallel connects")
	if err := fs.Parse(args); err != nil || *addr == "" {
		fmt.Fprintf(os.Stderr, "%s: bad arguments %q\n", holdCmd, args)
		return 2
	}
	var held []net.Conn
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "open "))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "%s: bad request %q\n", holdCmd, sc.Text())
			return 2
		}
		r := openMany(context.Background(), *addr, n, *workers, true)
		held = append(held, r.conns...)
		first := "-"
		if r.firstErr != nil {
			first = strings.ReplaceAll(r.firstErr.Error(), "\n", " ")
		}
		fmt.Printf("held %d %d %s\n", len(held), r.failures, first)
	}
	for _, c := range held {
		c.Close()
	}
	return 0
}

// holder is the parent's side of a hold process.
type holder struct {
	c     *child
	lines chan string
}

// startHolder starts a hold process connecting to addr.
func startHolder(kids *children, addr string, workers int) (*holder, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	h := &holder{lines: make(chan string, 16)}
	h.c, err = kids.start(holdCmd, func(r io.Reader) {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}, self, holdCmd, "-addr", addr, "-workers", strconv.Itoa(workers))
	return h, err
}

// open asks for n more connections and returns how many are held in all,
// how many attempts failed and the first error.
func (h *holder) open(n int) (held int, failures int64, firstErr string, err error) {
	if _, err := fmt.Fprintf(h.c.stdin, "open %d\n", n); err != nil {
		return 0, 0, "", err
	}
	select {
	case line, ok := <-h.lines:
		if !ok {
			return 0, 0, "", fmt.Errorf("hold process ended; stderr: %q", h.c.stderr.notableLines())
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 || f[0] != "held" {
			return 0, 0, "", fmt.Errorf("hold process answered %q", line)
		}
		held, _ = strconv.Atoi(f[1])
		failures, _ = strconv.ParseInt(f[2], 10, 64)
		if f[3] != "-" {
			firstErr = f[3]
		}
		return held, failures, firstErr, nil
	case <-time.After(5 * time.Minute):
		return 0, 0, "", fmt.Errorf("hold process did not answer within 5 minutes")
	}
}

// close closes the held connections (the process exits) and waits.
func (h *holder) close() { h.c.stop() }

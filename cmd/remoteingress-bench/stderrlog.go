package main

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"sync"
)

// stderrLog keeps what a child wrote on stderr: counts of warning and error
// lines, the first of them and the last lines.
type stderrLog struct {
	name string

	mu       sync.Mutex
	warnings int
	errs     int
	expected int
	notable  []string // first unexpected warning and error lines
	last     []string // ring of the last lines
	lines    int
	onNotice func(string)
	matches  map[string]int // lines containing each of watchedLines
	also     []string       // this child's own expected warnings (expect)
}

// expect adds warnings the bench causes on purpose in this child from now
// on (the several-hubs row's edge, whose hub it kills and stops).
func (l *stderrLog) expect(patterns ...string) {
	l.mu.Lock()
	l.also = append(l.also, patterns...)
	l.mu.Unlock()
}

// watchedLines are log messages the bench counts on every child's stderr:
// which firewall backend an edge put in force.
var watchedLines = []string{
	logNftInstalled,
	"blocked addresses are refused in process only",
	"cannot install the blocked addresses in nftables",
}

const logNftInstalled = "blocked addresses installed in nftables"

// matchCount is how many lines so far contained s, one of watchedLines.
func (l *stderrLog) matchCount(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.matches[s]
}

const (
	keepNotable = 20
	keepLast    = 20
)

func newStderrLog(name string) *stderrLog { return &stderrLog{name: name, matches: map[string]int{}} }

// drain reads r line by line until EOF.
func (l *stderrLog) drain(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l.add(sc.Text())
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		l.add("stderr read error: " + err.Error())
		io.Copy(io.Discard, r)
	}
}

// expectedWarnings are warnings the bench causes on purpose: STUN points at
// a closed port, and the processes are stopped at the end.
var expectedWarnings = []string{
	`msg="STUN discovery failed"`,
	`reason="edge stopping"`,
	`reason="hub stopping"`,
}

func (l *stderrLog) add(line string) {
	warn := strings.Contains(line, "level=WARN")
	bad := strings.Contains(line, "level=ERROR") || strings.Contains(line, "panic")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines++
	for _, w := range watchedLines {
		if strings.Contains(line, w) {
			l.matches[w]++
		}
	}
	if warn && !bad {
		for _, e := range append(expectedWarnings, l.also...) {
			if strings.Contains(line, e) {
				l.expected++
				warn = false
				break
			}
		}
	}
	if warn {
		l.warnings++
	}
	if bad {
		l.errs++
	}
	if (warn || bad) && len(l.notable) < keepNotable {
		l.notable = append(l.notable, line)
		if l.onNotice != nil {
			l.onNotice(l.name + ": " + line)
		}
	}
	if len(l.last) < keepLast {
		l.last = append(l.last, line)
	} else {
		l.last[l.lines%keepLast] = line
	}
}

// counts returns the number of unexpected warning and error lines, and of
// expected warnings, so far.
func (l *stderrLog) counts() (warnings, errs, expected int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.warnings, l.errs, l.expected
}

// notableLines returns the first warning and error lines.
func (l *stderrLog) notableLines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.notable...)
}

// setNotice installs fn, called for each notable line (for -v).
func (l *stderrLog) setNotice(fn func(string)) {
	l.mu.Lock()
	l.onNotice = fn
	l.mu.Unlock()
}

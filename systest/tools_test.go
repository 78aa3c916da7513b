package systest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// inCI reports CI=true: then a missing tool fails its test instead of
// skipping it.
func inCI() bool { return os.Getenv("CI") == "true" }

// lookTool finds a program on PATH, then in the sbin directories (which are
// often not on a normal user's PATH).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found on PATH or in /usr/sbin, /sbin", name)
}

// requireTool returns the path of a tool or skips the test (fails it when
// CI=true) naming the Debian package that provides it.
func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := lookTool(name)
	if err != nil {
		msg := fmt.Sprintf("%s is not installed (Debian package %q; scripts/ci-system-deps.sh installs it)", name, pkg)
		if inCI() {
			t.Fatalf("CI=true and %s", msg)
		}
		t.Skip(msg)
	}
	return p
}

// skipOrFail skips a test whose environment lacks something, or fails it
// when CI=true.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("CI=true and %s", msg)
	}
	t.Skip(msg)
}

// requireRoot skips a test that needs network namespaces.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates network namespaces, veth/TUN links, qdiscs and iptables rules " +
			"(run e.g. `sudo -E env PATH=$PATH go test -race -count=1 -v ./systest/`)")
	}
}

// run runs a command and returns its combined output; failures name the command.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// loopbacks are the addresses a listen port of these tests must be free on:
// 127.0.0.1 for the edge, 127.0.0.2 for the target, ::1 for IPv6 clients.
var loopbacks = []string{"127.0.0.1", "127.0.0.2", "::1"}

// procFDs counts the open file descriptors of a process.
func procFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// procFDList describes the open file descriptors of a process (for failure messages).
func procFDList(pid int) string {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		fmt.Fprintf(&b, "%s->%s ", e.Name(), target)
	}
	return b.String()
}

// procRSS is the resident set size of a process in bytes.
func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) >= 1 {
				kb, err := strconv.ParseInt(fields[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, errors.New("no VmRSS")
}

// procState is the state letter of /proc/<pid>/stat ("" when gone).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// mib formats a byte count.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

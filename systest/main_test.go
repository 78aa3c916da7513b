package systest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// binPath is the remoteingress-bin built for this run by TestMain.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		return m.Run() // go test -list (make fuzz): nothing runs, nothing to build
	}
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "^$" {
		return m.Run() // go test -run '^$' -bench/-fuzz (make bench, make fuzz): no tests here
	}
	dir, err := os.MkdirTemp("", "remoteingress-systest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "systest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if p := os.Getenv("SYSTEST_BINARY"); p != "" {
		// Test a given build (e.g. dist_bin/remoteingress-bin_linux_amd64).
		if binPath, err = filepath.Abs(p); err != nil {
			fmt.Fprintln(os.Stderr, "systest:", err)
			return 1
		}
		removeStaleNamespaces()
		return m.Run()
	}
	binPath = filepath.Join(dir, "remoteingress-bin")
	args := []string{"build", "-o", binPath}
	if os.Getenv("SYSTEST_RACE_BINARY") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/remoteingress-bin")
	gobin := "go"
	if p, err := exec.LookPath("go"); err == nil {
		gobin = p
	}
	cmd := exec.Command(gobin, args...)
	cmd.Dir = ".." // the module root; go test runs in the package directory
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "systest: go %s: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	removeStaleNamespaces()
	return m.Run()
}

// nsPrefix starts the name of every network namespace the tests create;
// the pid of the test process follows, so that a run can remove what an
// earlier run that was killed left behind (its pid is gone).
const nsPrefix = "rist"

var staleNS = regexp.MustCompile(`^` + nsPrefix + `(\d+)[a-z]$`)

func removeStaleNamespaces() {
	if os.Geteuid() != 0 {
		return
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	ip, err := lookTool("ip")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := staleNS.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its run is still going
		}
		_ = exec.Command(ip, "netns", "del", e.Name()).Run()
	}
}

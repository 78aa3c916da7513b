package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is sysconf(_SC_CLK_TCK), the unit of utime and stime in
// /proc/<pid>/stat. It is 100 on every Linux (USER_HZ); Go has no sysconf
// without cgo.
const clockTicks = 100

// cpuSeconds returns the user+system CPU time of process pid (all its
// threads) from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	return statCPUSeconds(fmt.Sprintf("/proc/%d/stat", pid))
}

// statCPUSeconds returns utime+stime of a /proc stat file (a process's or
// a thread's).
func statCPUSeconds(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields count from after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected %s", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short %s", path)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad utime/stime in %s", path)
	}
	return float64(ut+st) / clockTicks, nil
}

// statusField returns a field of /proc/<pid>/status, e.g. "VmRSS" → "1234 kB".
func statusField(pid int, name string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in /proc/%d/status", name, pid)
}

// rssKiB returns the resident set size of process pid in KiB (VmRSS).
func rssKiB(pid int) (int64, error) {
	v, err := statusField(pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
}

// openFilesLimit returns the soft "Max open files" of process pid.
func openFilesLimit(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no open-files limit for %d", pid)
}

// wantNofile is the RLIMIT_NOFILE the bench asks for: 10 000 idle
// connections cost the bench process two descriptors each (client and
// target side), and a relay-in process two as well.
const wantNofile = 65536

// raiseNofile raises RLIMIT_NOFILE of the bench process, which the children
// inherit (Go passes the current limit on once Setrlimit has been called).
// Without the privilege to raise the hard limit it raises the soft one to it.
func raiseNofile() (syscall.Rlimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return lim, err
	}
	want := lim
	if want.Max < wantNofile {
		want.Max = wantNofile
	}
	want.Cur = want.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want = lim
		want.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return lim, err
		}
	}
	err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim, err
}

// procCounters returns counters of process pid that explain CPU time: read
// and write system calls (/proc/<pid>/io syscr, syscw) and voluntary and
// involuntary context switches (/proc/<pid>/status). Missing ones are left out.
func procCounters(pid int) map[string]float64 {
	out := map[string]float64{}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "syscr" || k == "syscw") {
				if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					out[k] = n
				}
			}
		}
	}
	// Context switches are counted per thread; sum the threads alive now.
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					out[k] += n
				}
			}
		}
	}
	return out
}

// schedSeconds is the time process pid's threads have run on a CPU, from
// /proc/<pid>/task/*/schedstat (nanoseconds, unlike stat's clock ticks):
// for CPU time per connection over short measurements. A thread that has
// exited no longer counts; the Go runtime's threads rarely exit.
func schedSeconds(pid int) (float64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread has just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("schedstat of %d/%s: %w", pid, t.Name(), err)
		}
		ns += n
	}
	return float64(ns) / 1e9, nil
}

package main

import (
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// profileEnv names a file (%p becomes the pid) to write a CPU profile of the whole run to, for
// finding where time goes under a real workload (`make bench`).
const profileEnv = "REMOTEINGRESS_CPUPROFILE"

// startProfile starts CPU profiling when REMOTEINGRESS_CPUPROFILE is set and
// returns the function that stops it and writes the file.
func startProfile(logger *slog.Logger) func() {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}
	}
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid())) // one file per process
	f, err := os.Create(path)
	if err != nil {
		logger.Warn("cannot write CPU profile", "path", path, "error", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		logger.Warn("cannot start CPU profile", "error", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

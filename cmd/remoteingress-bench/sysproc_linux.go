package main

import (
	"fmt"
	"syscall"
)

// childSysProcAttr makes the kernel kill a child when the bench dies, even
// by SIGKILL, so no hub, edge or relay outlives it.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// threadCPUSeconds returns the user+system CPU time of the calling thread
// (the caller has locked its goroutine to it).
func threadCPUSeconds() (float64, error) {
	return statCPUSeconds(fmt.Sprintf("/proc/self/task/%d/stat", syscall.Gettid()))
}

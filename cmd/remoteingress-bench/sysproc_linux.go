package main

import "syscall"

// childSysProcAttr makes the kernel kill a child when the bench dies, even
// by SIGKILL, so no hub, edge or relay outlives it.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

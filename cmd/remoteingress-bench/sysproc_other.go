//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// childSysProcAttr has no parent-death signal outside Linux; the children
// still stop when their stdin closes. (The bench reads /proc and is meant for
// Linux.)
func childSysProcAttr() *syscall.SysProcAttr { return nil }

// threadCPUSeconds: a thread's CPU time is read from /proc, on Linux.
func threadCPUSeconds() (float64, error) { return 0, errors.New("no /proc") }

//go:build !linux

package main

import "syscall"

// childSysProcAttr has no parent-death signal outside Linux; the children
// still stop when their stdin closes. (The bench reads /proc and is meant for
// Linux.)
func childSysProcAttr() *syscall.SysProcAttr { return nil }

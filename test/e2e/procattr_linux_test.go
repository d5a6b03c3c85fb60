//go:build linux

package e2e

import "syscall"

// sysProcAttr makes the kernel kill a child when this test process dies
// (a panic or a timeout would otherwise leak nodes and haproxy).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

//go:build !linux

package e2e

import "syscall"

// sysProcAttr: no parent-death signal outside Linux; t.Cleanup stops children.
func sysProcAttr() *syscall.SysProcAttr { return nil }

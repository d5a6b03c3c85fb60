//go:build !linux

package main

import "syscall"

// bindNoPort: elsewhere a bind to port 0 it is (see dial_linux.go).
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }

//go:build !linux

package transport

// fdUnread cannot be known here: -1.
func fdUnread(uintptr) int { return -1 }

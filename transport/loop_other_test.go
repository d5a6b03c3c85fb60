//go:build !linux || notify_noepoll

package transport

import "syscall"

// unreadByServer is how many bytes the server's socket of c holds that the
// driver has not read yet, or -1 where that cannot be known.
func unreadByServer(c *Conn) int {
	sc, ok := c.io.nc.(syscall.Conn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	if err := raw.Control(func(fd uintptr) { n = fdUnread(fd) }); err != nil {
		return -1
	}
	return n
}

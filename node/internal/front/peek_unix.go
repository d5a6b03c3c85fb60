//go:build unix

package front

import (
	"errors"
	"net"
	"syscall"
)

// peekRoute waits for the first bytes of nc (up to its read deadline) and
// decides its route from them without taking them off the socket
// (MSG_PEEK): a connection for net/http gets it as it was accepted.
func peekRoute(nc net.Conn, paths []string) route {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return routeHTTP
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return routeHTTP
	}
	// Long enough to decide any path of at most maxPath bytes.
	var buf [len("GET ") + maxPath + 1]byte
	r := routeNone
	err = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return false // wait until readable
		case err != nil || n == 0:
			return true // failed, or closed before a request: routeNone
		}
		var decided bool
		r, decided = routeOf(buf[:n], paths)
		// Undecided: wait for more bytes (the poller's next edge).
		return decided
	})
	if err != nil { // the deadline passed, or the connection was closed
		return routeNone
	}
	return r
}

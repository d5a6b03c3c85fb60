//go:build linux

package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort is the clients' dialer Control: the socket is bound to its
// source address with the port left to connect (IP_BIND_ADDRESS_NO_PORT),
// which picks it for the whole 4-tuple. A bind to port 0 would pick a port
// unused on that address, whatever the destination: the TIME_WAIT
// connections of the previous run (one port each for a minute, ~10,000 per
// source address a ramp) then leave bind searching a nearly full range, and
// a ramp run right after another took up to 4x as long.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

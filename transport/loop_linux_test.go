//go:build linux && !notify_noepoll

package transport

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestDetachedSocketKeepsOptions: keepalive and TCP_NODELAY are socket
// options set by Go at accept; the descriptor the loop owns shares the
// socket, so it keeps them without setting them again. And it is
// non-blocking.
func TestDetachedSocketKeepsOptions(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	dialRaw(t, ts.addr, nil)
	c := ts.nextConn(t)
	c.mu.Lock()
	fd := int(c.io.fd)
	c.mu.Unlock()
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	} {
		got, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err != nil || got != o.want {
			t.Errorf("%s = %d (%v), want %d", o.name, got, err, o.want)
		}
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("flags %#x (%v): the loop's socket must be non-blocking", fl, err)
	}
}

// unreadByServer is how many bytes the server's socket of c holds that the
// loop has not read yet, or -1 once it is closed.
func unreadByServer(c *Conn) int {
	// Under c.mu the loop cannot close the descriptor (see closeFD).
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.io.fd < 0 {
		return -1
	}
	return fdUnread(uintptr(c.io.fd))
}

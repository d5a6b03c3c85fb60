package node

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Keep-alive of accepted connections: Go's defaults for accepted TCP
// connections (net.ListenConfig.KeepAlive zero).
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)

// listenConfig binds the node's listeners. A socket accepted on Linux
// inherits the listener's options, so keep-alive is set once, on the
// listener, instead of by Go with four setsockopt calls per accepted
// connection (a handshake makes about twenty system calls;
// TestListenerKeepAlive checks the inheritance).
func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			for _, o := range []struct{ level, opt, v int }{
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle / time.Second)},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval / time.Second)},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
			} {
				if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
					return
				}
			}
		})
		if err == nil && serr != nil {
			err = fmt.Errorf("keep-alive: %w", serr)
		}
		return err
	}}
}

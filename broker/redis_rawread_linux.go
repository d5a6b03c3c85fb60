package broker

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawReader returns a read of conn's socket that does not enter the
// scheduler's system call path: read(2) through RawSyscall, waiting for
// readability (and conn's read deadline) in Go's poller as conn.Read
// does. A non-blocking read returns at once, so there is nothing for the
// scheduler to hand off; what entering it costs here is sysmon: every
// entersyscall while the node's Ps are all idle wakes it from its deep
// sleep into 20 µs polls, which at 20k per-user messages/s was 7-8 % of
// the node's CPU (issue 13). nil when conn is not a socket (TLS): the
// caller reads conn.
func rawReader(conn net.Conn) func(p []byte) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		buf   []byte
		n     int
		errno syscall.Errno
	)
	read := func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // nothing yet: wait in the poller
			}
			n, errno = int(r), e
			return true
		}
	}
	return func(p []byte) (int, error) {
		if len(p) == 0 {
			return 0, nil
		}
		buf, n, errno = p, 0, 0
		err := raw.Read(read)
		buf = nil
		switch {
		case err != nil:
			return 0, err // closed, or the read deadline passed: a *net.OpError as conn.Read's
		case errno != 0:
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: conn.LocalAddr(), Addr: conn.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

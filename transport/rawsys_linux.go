//go:build linux && !notify_noepoll

package transport

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loops' system calls on non-blocking descriptors, made without
// telling the scheduler (RawSyscall). unix.Read and friends enter the
// blocking-syscall path: when one takes longer than the scheduler's 20 µs
// tick (a big writev, or the kernel preempting the thread on a busy
// machine), the runtime hands the goroutine's P to another thread and
// starts a new one when none is idle, and Go never ends a thread it
// started. None of these calls can block: the descriptors are
// non-blocking, and epoll_wait is asked not to wait.

func rawRead(fd int, p []byte) (int, error) { return rawIO(unix.SYS_READ, fd, p) }

func rawWrite(fd int, p []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, p) }

// rawIO is read(2) or write(2), by trap: -1 and the errno on failure.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func writev(fd int, iov []unix.Iovec) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollPoll is epoll_wait with a timeout of 0: what is ready, never waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func epollAdd(epfd, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// dupNonblock duplicates fd (close-on-exec) and makes the copy
// non-blocking.
func dupNonblock(fd uintptr) (int, error) {
	nfd, _, e := unix.RawSyscall(unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	// The duplicate shares the file status flags of the original, which
	// Go's sockets already have O_NONBLOCK in: one call less per handshake.
	fl, _, e := unix.RawSyscall(unix.SYS_FCNTL, nfd, unix.F_GETFL, 0)
	if e == 0 && fl&unix.O_NONBLOCK == 0 {
		_, _, e = unix.RawSyscall(unix.SYS_FCNTL, nfd, unix.F_SETFL, fl|unix.O_NONBLOCK)
	}
	if e != 0 {
		rawClose(int(nfd))
		return -1, e
	}
	return int(nfd), nil
}

// rawClose closes a socket: without SO_LINGER, close(2) does not wait.
func rawClose(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

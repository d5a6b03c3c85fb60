package transport

import "golang.org/x/sys/unix"

// fdUnread is how many received bytes socket fd holds that its owner has
// not read yet.
func fdUnread(fd uintptr) int {
	n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	if err != nil {
		return -1
	}
	return n
}

//go:build unix

package node

import "golang.org/x/sys/unix"

// fileLimit returns the open files soft limit, and whether it could be read.
func fileLimit() (uint64, bool) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true // int64 on the BSDs
}

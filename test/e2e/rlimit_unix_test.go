//go:build unix

package e2e

import "syscall"

// openFilesHardLimit is the hard RLIMIT_NOFILE, and whether it could be read.
func openFilesHardLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Max), true
}

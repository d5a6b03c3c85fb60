//go:build !unix

package e2e

// openFilesHardLimit: no RLIMIT_NOFILE on this system.
func openFilesHardLimit() (uint64, bool) { return 0, false }

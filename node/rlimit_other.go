//go:build !unix

package node

// fileLimit: this system has no open files limit to read.
func fileLimit() (uint64, bool) { return 0, false }

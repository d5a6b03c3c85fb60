//go:build !unix

package main

import "log/slog"

// raiseFileLimit: this system has no soft open-files limit to lift.
func raiseFileLimit(log *slog.Logger) {
	log.Info("open files limit: nothing to raise on this system")
}

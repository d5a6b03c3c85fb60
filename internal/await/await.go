// Package await is the one polling helper of the tests: wait for a condition
// that another goroutine or process makes true, instead of sleeping for a
// guessed time.
package await

import (
	"testing"
	"time"
)

// DefaultTimeout bounds a wait unless the caller says otherwise.
const DefaultTimeout = 15 * time.Second

// pollEvery is short enough that a test does not wait long after the
// condition holds, long enough that polling costs nothing.
const pollEvery = 10 * time.Millisecond

// True polls cond until it holds, failing t (naming what) after
// DefaultTimeout.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, DefaultTimeout, what, cond)
}

// Within polls cond until it holds, failing t after timeout.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Poll polls cond until it holds or timeout passes, and reports whether it
// held. For callers that decide themselves what a timeout means.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
	return true
}

// Package leakcheck fails a test binary whose tests left goroutines behind
// (go.uber.org/goleak), giving libraries' own timers a bounded grace.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/notify-dev/notify/internal/await"
)

// Tests is what runs a package's tests: *testing.M, or a wrapper that
// does more around its Run.
type Tests interface{ Run() int }

var _ Tests = (*testing.M)(nil)

// Main runs the tests, then, when they passed, waits up to grace for every
// goroutine they started to end, and fails the run naming those still
// there. The grace is for goroutines that end by themselves soon after
// their owner was stopped: go-redis's dial prober sleeps 1 s before it sees
// its client closed, memberlist's in-flight probe waits for its ack timeout.
// A goroutine that never ends still fails the run.
func Main(m Tests, grace time.Duration) {
	code := m.Run()
	var leaked error
	if code == 0 && !await.Poll(grace, func() bool { leaked = goleak.Find(); return leaked == nil }) {
		fmt.Fprintf(os.Stderr, "goroutines left behind by the tests: %v\n", leaked)
		code = 1
	}
	os.Exit(code)
}

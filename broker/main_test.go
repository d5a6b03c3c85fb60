package broker

import (
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/leakcheck"
)

// TestMain fails the run when a test leaves a goroutine behind: Run, the
// probe loop and go-redis's pools must all have ended once their owners
// returned or were closed. go-redis's dial prober (started after a pool's
// PoolSize dials failed in a row, as in the outage tests) sleeps 1s between
// attempts and only then sees that its client was closed: hence the grace.
func TestMain(m *testing.M) { leakcheck.Main(m, 3*time.Second) }

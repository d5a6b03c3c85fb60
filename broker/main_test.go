package broker

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/notify-dev/notify/internal/await"
)

// leakGrace is how long goroutines may take to end after the tests. go-redis's
// dial prober (started after a pool's PoolSize dials failed in a row, as in the
// outage tests) sleeps 1s between attempts and only then sees that its client
// was closed; goleak's own retries wait less than half a second.
const leakGrace = 3 * time.Second

// TestMain fails the run when a test leaves a goroutine behind: Run, the
// probe loop and go-redis's pools must all have ended once their owners
// returned or were closed.
func TestMain(m *testing.M) {
	code := m.Run()
	var leaked error
	if code == 0 && !await.Poll(leakGrace, func() bool { leaked = goleak.Find(); return leaked == nil }) {
		fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests: %v\n", leaked)
		code = 1
	}
	os.Exit(code)
}

package front

import (
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/leakcheck"
)

// TestMain fails the run when a test leaves a goroutine behind: every
// front's Run must have returned with its connections' goroutines. The
// grace covers the tests' own net/http clients.
func TestMain(m *testing.M) { leakcheck.Main(m, 2*time.Second) }

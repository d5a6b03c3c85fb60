package auth

import (
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/leakcheck"
)

// TestMain fails the run when a test leaves a goroutine behind: every JWKS
// Run must have returned, and its HTTP connections closed with it. The
// grace covers net/http's connection goroutines, which end just after
// their connection is closed.
func TestMain(m *testing.M) { leakcheck.Main(m, 2*time.Second) }

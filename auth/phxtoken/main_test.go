package phxtoken

import (
	"testing"

	"github.com/notify-dev/notify/internal/leakcheck"
)

// TestMain fails the run if a test leaves a goroutine behind; only
// TestErlangLive starts anything (an escript process, waited for).
func TestMain(m *testing.M) { leakcheck.Main(m, 0) }

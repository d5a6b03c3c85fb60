package mesh

import (
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/leakcheck"
)

// TestMain fails the run when a test leaves a goroutine behind: every
// link, inbound connection and hand-over ends with its Mesh's Run.
func TestMain(m *testing.M) { leakcheck.Main(m, 3*time.Second) }

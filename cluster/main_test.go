package cluster

import (
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/leakcheck"
)

// TestMain fails the run when a test leaves a goroutine behind: once Run has
// returned (or Close, for a Cluster that never ran), neither ours nor
// memberlist's may be left. memberlist's Shutdown does not wait for a probe
// in flight, which ends at its ack timeout (a second or two): hence the
// grace.
func TestMain(m *testing.M) { leakcheck.Main(m, 5*time.Second) }

package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when a test leaves a goroutine behind: once Run has
// returned (or Close, for a Cluster that never ran), neither ours nor
// memberlist's may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

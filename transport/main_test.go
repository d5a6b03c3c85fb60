package transport

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when a test leaves a goroutine behind: every event
// loop, relay and connection goroutine must end with its server or socket.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

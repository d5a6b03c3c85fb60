package node

import "testing"

// TestEmbeddedBrokerDeliversWhenStartReturns: the embedded broker delivers
// synchronously, so it must have its handler when Start returns; before, a
// publish made at once (TestLongPoll did) could reach nobody.
func TestEmbeddedBrokerDeliversWhenStartReturns(t *testing.T) {
	for range 20 {
		tn := startNode(t, nil, nil)
		if err := tn.broker.Ready(); err != nil {
			t.Fatalf("right after Start the embedded broker is not running: %v", err)
		}
		if err := tn.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

package mesh

import (
	"errors"
	"runtime"
	"testing"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/await"
)

// BenchmarkPublishToPeer: 100-byte messages for a user another node owns,
// from Publish on one node to the handler of the other, over one loopback
// link; msgs/s is the link's rate (publisher, both ends and the race
// detector, if on, share the machine).
func BenchmarkPublishToPeer(b *testing.B) {
	ms := startNet(b, []string{"a", "b"}, nil)
	linksUp(b, ms)
	ch := broker.UserChannel(userOwnedBy(b, ms[0], "b", 0))
	payload := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// A publisher faster than the link fills its queue: wait for room,
		// so that the figure is the link's sustained rate.
		err := ms[0].Publish(b.Context(), ch, payload)
		for errors.Is(err, errQueueFull) {
			runtime.Gosched()
			err = ms[0].Publish(b.Context(), ch, payload)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	await.True(b, "every message delivered", func() bool {
		return ms[1].counter("notify_mesh_received_total") == float64(b.N)
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

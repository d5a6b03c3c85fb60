package hub

import (
	"context"
	"math/rand/v2"
	"time"
)

// closeTick is how often a paced close looks at the clock.
const closeTick = 10 * time.Millisecond

// ClosePaced closes clients with code and reason in random order, the i-th
// at spread*i/N, so that they do not all reconnect at once. ctx ending
// closes the rest at once. It returns when every client was told to close.
func ClosePaced(ctx context.Context, clients []*Client, spread time.Duration, code int, reason string) {
	rand.Shuffle(len(clients), func(i, j int) { clients[i], clients[j] = clients[j], clients[i] })
	tick := time.NewTicker(closeTick)
	defer tick.Stop()
	start := time.Now()
	for i := 0; i < len(clients); {
		due := len(clients)
		if spread > 0 {
			due = min(due, int(int64(len(clients))*int64(time.Since(start))/int64(spread))+1)
		}
		for ; i < due; i++ {
			clients[i].Sink.Close(code, reason)
		}
		if i == len(clients) {
			return
		}
		select {
		case <-ctx.Done():
			spread = 0
		case <-tick.C:
		}
	}
}

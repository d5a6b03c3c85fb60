package node

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/notify-dev/notify/transport"
)

const drainTick = 10 * time.Millisecond

// drain closes every connection with 1012 "shutdown", spread over the drain
// timeout in random order so clients do not all reconnect at once, and waits
// for them to finish their closing handshakes.
func (n *Node) drain(ctx context.Context) {
	closeTimeout := n.cfg.CloseTimeout
	if closeTimeout == 0 {
		closeTimeout = transport.DefaultConfig().CloseTimeout
	}
	deadline := time.Now().Add(n.cfg.DrainTimeout + closeTimeout)

	closePaced(ctx, n.hub.all(), n.cfg.DrainTimeout*9/10)
	// Connections that were mid-handshake when the drain began.
	for _, c := range n.hub.all() {
		c.conn.Close(transport.CloseServiceRestart, "shutdown")
	}

	wait := time.NewTimer(time.Until(deadline))
	defer wait.Stop()
	for n.conns.Load() > 0 || n.relayed.Load() > 0 {
		select {
		case <-n.connsZero:
		case <-wait.C:
			n.log.Warn("drain timeout: closing remaining connections", "connections", n.conns.Load(), "relayed", n.relayed.Load())
			return
		case <-ctx.Done():
			return
		}
	}
}

// closePaced closes clients with 1012 "shutdown" in random order, the i-th
// at spread*i/N, so that they do not all reconnect at once. ctx ending closes
// the rest at once.
func closePaced(ctx context.Context, clients []*client, spread time.Duration) {
	rand.Shuffle(len(clients), func(i, j int) { clients[i], clients[j] = clients[j], clients[i] })
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	start := time.Now()
	for i := 0; i < len(clients); {
		due := len(clients)
		if spread > 0 {
			due = min(due, int(int64(len(clients))*int64(time.Since(start))/int64(spread))+1)
		}
		for ; i < due; i++ {
			clients[i].conn.Close(transport.CloseServiceRestart, "shutdown")
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

package node

import (
	"context"
	"time"

	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// drainPoll is how often a drain looks whether every connection is gone.
const drainPoll = 10 * time.Millisecond

// awaitDrainDelay keeps the node serving new connections for the drain
// delay while /readyz answers 503, so that a load balancer checking it takes
// the node out before it starts refusing handshakes (each refusal is a failed
// reconnect for a client the balancer still sends here).
func (n *Node) awaitDrainDelay(ctx context.Context) {
	if n.cfg.DrainDelay <= 0 {
		return
	}
	n.log.Info("stopping: not ready, still accepting connections", "drain_delay", n.cfg.DrainDelay.String())
	t := time.NewTimer(n.cfg.DrainDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// drain closes every client with 1012 "shutdown", spread over the drain
// timeout in random order so clients do not all reconnect at once, and waits
// for them to finish their closing handshakes, and for the clients relayed
// through this node to be closed by their owners.
func (n *Node) drain(ctx context.Context) {
	deadline := time.Now().Add(n.cfg.DrainTimeout + n.loops.CloseTimeout())
	hub.ClosePaced(ctx, n.hub.Clients(), n.cfg.DrainTimeout*9/10, transport.CloseServiceRestart, "shutdown")
	// Clients that were mid-handshake when the drain began.
	for _, c := range n.hub.Clients() {
		c.Sink.Close(transport.CloseServiceRestart, "shutdown")
	}
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	for n.hub.Open() > 0 || n.place.Relayed() > 0 {
		if time.Now().After(deadline) {
			n.log.Warn("drain timeout: closing remaining connections", "connections", n.hub.Open(), "relayed", n.place.Relayed())
			return
		}
		select {
		case <-poll.C:
		case <-ctx.Done():
			return
		}
	}
}

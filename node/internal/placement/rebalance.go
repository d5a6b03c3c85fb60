package placement

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// rebalanceSettle is how long after a membership change the rebalance scans
// once more: other nodes apply the change a little later and, meanwhile,
// may relay clients here for users this node no longer owns.
const rebalanceSettle = time.Second

// Run closes, paced and jittered, the local clients whose user is owned by
// another member, after every membership change: they reconnect and land on
// their owner. A newer change restarts the scan; each client is checked
// against the ring current when its turn comes, so users that move back
// stay. Each change is followed by a second scan once the views have
// settled, and a handshake relayed here for a user another node owns asks
// for one too. When ctx ends, Run waits for the paced closes it started
// (CloseRelayedVia) and returns.
func (p *Placement) Run(ctx context.Context) error {
	defer p.proxy.CloseIdleConnections()
	defer p.tasks.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.changed:
			settle.Reset(rebalanceSettle)
		case <-p.recheck:
			settle.Reset(rebalanceSettle)
			continue
		case <-settle.C:
		}
		for p.rebalance(ctx) {
			// A newer change came during the scan: scan again now, and once
			// more when it has settled.
			settle.Reset(rebalanceSettle)
		}
	}
}

// rebalance closes the misplaced clients at the rebalance rate. It returns
// true when a newer membership change interrupted it.
func (p *Placement) rebalance(ctx context.Context) (again bool) {
	moving := p.misplaced()
	if len(moving) == 0 {
		return false
	}
	p.log.Info("rebalancing: closing connections of users owned elsewhere", "connections", len(moving), "rate", p.cfg.RebalanceRate)
	rand.Shuffle(len(moving), func(i, j int) { moving[i], moving[j] = moving[j], moving[i] })
	interval := time.Duration(float64(time.Second) / p.cfg.RebalanceRate)
	pace := time.NewTimer(0)
	defer pace.Stop()
	<-pace.C
	for _, c := range moving {
		// Jitter of +-50% keeps a fleet of nodes from closing in lockstep.
		pace.Reset(interval/2 + rand.N(interval+1))
		select {
		case <-ctx.Done():
			return false
		case <-p.changed:
			return true
		case <-pace.C:
		}
		if p.cfg.Draining() {
			return false
		}
		if owner, _ := p.Owner(c.User); owner == "" || c.Sink.Closed() {
			continue
		}
		c.Sink.Close(transport.CloseServiceRestart, "moved")
		p.metrics.rebalanceCloses.Inc()
	}
	return false
}

// misplaced returns the local clients whose user another member owns.
func (p *Placement) misplaced() []*hub.Client {
	var out []*hub.Client
	for _, c := range p.cfg.Hub.Clients() {
		if owner, _ := p.Owner(c.User); owner != "" {
			out = append(out, c)
		}
	}
	return out
}

// CloseRelayedVia closes, spread over the drain timeout, the clients that a
// draining node relays here: their close frames travel through its relay,
// so its clients learn to reconnect elsewhere. It returns at once; Run waits
// for the closes when it stops (and a stop closes the rest at once).
func (p *Placement) CloseRelayedVia(node string) {
	var via []*hub.Client
	for _, c := range p.cfg.Hub.Clients() {
		if c.Via == node {
			via = append(via, c)
		}
	}
	if len(via) == 0 {
		return
	}
	p.log.Info("closing connections relayed by a draining node", "node", node, "connections", len(via))
	p.tasks.Go(func(ctx context.Context) {
		hub.ClosePaced(ctx, via, p.cfg.DrainTimeout*9/10, transport.CloseServiceRestart, "shutdown")
	})
}

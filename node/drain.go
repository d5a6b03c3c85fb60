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

	n.closePaced(ctx, n.allClients(), n.cfg.DrainTimeout*9/10)
	// Connections that were mid-handshake when the drain began.
	for _, c := range n.allClients() {
		n.closeClient(c, transport.CloseServiceRestart, "shutdown")
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
func (n *Node) closePaced(ctx context.Context, clients []*client, spread time.Duration) {
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
			n.closeClient(clients[i], transport.CloseServiceRestart, "shutdown")
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

// allClients returns every local client: those in a user's set and the
// Phoenix sockets (which may have joined no user).
func (n *Node) allClients() []*client {
	var out []*client
	for _, c := range n.hub.all() {
		if c.phx == nil {
			out = append(out, c)
		}
	}
	n.phxMu.Lock()
	for p := n.phxHead; p != nil; p = p.regNext {
		out = append(out, p.c)
	}
	n.phxMu.Unlock()
	return out
}

// closeClient closes a client with code: a close frame on a connection, the
// end of a long-poll session (its next poll gets 410).
func (n *Node) closeClient(c *client, code int, reason string) {
	if s, ok := c.phx.lpSession(); ok {
		n.endSession(s, code)
		return
	}
	c.conn.Close(code, reason)
}

// closed reports whether a client is closing or gone.
func (c *client) closed() bool {
	if s, ok := c.phx.lpSession(); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ended
	}
	return c.conn.Closed()
}

// lpSession returns the long-poll session behind a Phoenix socket, if it is
// one. Safe on a nil socket.
func (p *phxSocket) lpSession() (*lpSession, bool) {
	if p == nil {
		return nil, false
	}
	s, ok := p.out.(*lpSession)
	return s, ok
}

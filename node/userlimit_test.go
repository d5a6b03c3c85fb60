package node

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/notify-dev/notify/internal/redistest"
)

// TestMaxConnectionsPerUserAcrossNodes: a limit of 3 holds across nodes:
// the owner counts every connection of the user (the other node relays
// them there), and its 429 reaches a client that came through the other
// node, with the JSON error.
func TestMaxConnectionsPerUserAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 2, func(_ int, c *Config) { c.MaxConnectionsPerUser = 3 })
	user := userOwnedBy(t, nodes, "node-1", 0)
	tok := token(t, user, nil, time.Hour)
	for i := range 3 {
		c, err := nodes[i%2].tryDial(tok, "", nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		c.handshake(user)
	}
	for _, n := range nodes {
		_, resp, err := websocket.Dial(t.Context(), n.wsURL(""), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a fourth connection through %s: %v, want 429", n.cfg.NodeName, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"error"`) || !strings.Contains(string(b), "NOTIFY_MAX_CONNECTIONS_PER_USER") {
			t.Fatalf("429 body %q", b)
		}
	}
	if got := nodes[1].metric("notify_connections_rejected_total", "reason", "user_limit"); got != 2 {
		t.Fatalf("owner counted %v user_limit refusals, want 2", got)
	}
	other := token(t, userOwnedBy(t, nodes, "node-1", 1), nil, time.Hour)
	if _, err := nodes[0].tryDial(other, "", nil); err != nil {
		t.Fatalf("another user: %v", err)
	}
}

// TestMaxConnectionsPerUserConcurrent: concurrent connects of one user
// never overshoot the limit, and a freed slot can be taken again.
func TestMaxConnectionsPerUserConcurrent(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) { c.MaxConnectionsPerUser = 3 })
	tok := token(t, "busy", nil, time.Hour)
	var ok atomic.Int32
	var wg sync.WaitGroup
	conns := make(chan *wsClient, 20)
	for range 20 {
		wg.Go(func() {
			if c, err := tn.tryDial(tok, "", nil); err == nil {
				ok.Add(1)
				conns <- c
			}
		})
	}
	wg.Wait()
	close(conns)
	if ok.Load() != 3 {
		t.Fatalf("%d connections taken, want 3", ok.Load())
	}
	first := <-conns
	first.conn.Close(websocket.StatusNormalClosure, "")
	eventually(t, "a slot to free up", func() bool {
		c, err := tn.tryDial(tok, "", nil)
		if err != nil {
			return false
		}
		c.conn.CloseNow()
		return true
	})
}

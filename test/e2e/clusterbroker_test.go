package e2e

import (
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

// TestClusterBrokerBehindHAProxy: NOTIFY_BROKER=cluster, no Redis at all,
// three nodes behind haproxy, 900 clients of 300 users (relayed to their
// owners by whichever node haproxy picks), every message published through
// the API of a node taken in turn, mostly not the owner's: every message
// arrives exactly once and in order.
func TestClusterBrokerBehindHAProxy(t *testing.T) {
	requireTools(t, "haproxy")
	e := newEnv(t)
	e.nodeEnv = []string{"PUBSUB_REDIS_ADDR=", "NOTIFY_BROKER=cluster", "NOTIFY_HISTORY_SIZE=0"}
	nodes := []*node{e.planNode("n1", "127.0.0.2"), e.planNode("n2", "127.0.0.3"), e.planNode("n3", "127.0.0.4")}
	e.start(nodes[0], nil, true)
	e.start(nodes[1], []string{nodes[0].gossip}, true)
	e.start(nodes[2], []string{nodes[0].gossip, nodes[1].gossip}, true)
	waitRing(t, nodes, names(nodes))
	// Each node was ready when it started; the first ones have links to
	// the later ones only once those joined.
	for _, n := range nodes {
		var code int
		var body string
		var err error
		if !await.Poll(startTimeout, func() bool { code, body, err = n.get("/readyz"); return err == nil && code == 200 }) {
			t.Fatalf("%s not ready with its links: %d %s %v", n.name, code, body, err)
		}
	}
	lb := e.startHAProxy(nodes)
	lb.waitServers(t, names(nodes)...)
	w := newWorld(t, lb.addr, nil, 300, 3)
	pub := newAPIPublisher(w.users, 16)
	pub.noHistory = true
	pub.use(nodes)
	w.send = pub.send
	start := time.Now()
	w.connect(t)
	w.waitSettled(t, newRing(t, names(nodes)...), 30*time.Second, false)
	w.round(t, 5)
	w.verify(t)
	t.Logf("%s", pub.summary(time.Since(start)))
	if pub.failed > 0 {
		t.Errorf("%d Publish calls failed", pub.failed)
	}
}

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
	nodes, lb := e.startThreeBehindHAProxy(t)
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

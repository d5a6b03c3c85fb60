package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// TestShardedSubscribeMode: NOTIFY_SUBSCRIBE_MODE=sharded on a 3-master
// Redis Cluster, three nodes behind haproxy, 900 clients of 300 users.
// Messages SPUBLISHed by an application and published through the API
// (notify_spublish, history on) each arrive exactly once and in order;
// each connected user's channel has one shard subscriber, its owner, on
// the master of its slot; SPUBLISH to a user connected nowhere answers 0;
// once the clients leave, no channel stays subscribed.
func TestShardedSubscribeMode(t *testing.T) {
	requireTools(t, "haproxy", "redis-server")
	e := newEnv(t)
	rc := redistest.StartCluster(t, 3)
	e.nodeEnv = []string{"PUBSUB_REDIS_ADDR=", "REDIS_CLUSTER_ADDRS=" + strings.Join(rc.Addrs(), ","), "NOTIFY_SUBSCRIBE_MODE=sharded"}
	nodes := []*node{e.planNode("n1", "127.0.0.2"), e.planNode("n2", "127.0.0.3"), e.planNode("n3", "127.0.0.4")}
	e.start(nodes[0], nil, true)
	e.start(nodes[1], []string{nodes[0].gossip}, true)
	e.start(nodes[2], []string{nodes[0].gossip, nodes[1].gossip}, true)
	waitRing(t, nodes, names(nodes))
	lb := e.startHAProxy(nodes)
	lb.waitServers(t, names(nodes)...)
	app := rc.Client(t)
	w := newWorld(t, lb.addr, nil, 300, 3)
	spublish := func(ctx context.Context, q int) error {
		pipe := app.Pipeline()
		for _, u := range w.users {
			pipe.SPublish(ctx, "notify:"+u, u+":"+strconv.Itoa(q))
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	w.send = spublish
	w.connect(t)
	w.waitSettled(t, newRing(t, names(nodes)...), 30*time.Second, false)
	w.round(t, 5)
	pub := newAPIPublisher(w.users, 16)
	pub.use(nodes)
	w.send = pub.send
	w.round(t, 5)
	w.verify(t)
	if pub.failed > 0 {
		t.Errorf("%d Publish calls failed", pub.failed)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	channels := make([]string, len(w.users))
	for i, u := range w.users {
		channels[i] = "notify:" + u
	}
	for ch, n := range shardNumSub(t, ctx, rc, channels) {
		if n != 1 {
			t.Errorf("PUBSUB SHARDNUMSUB %s = %d over the masters, want 1 (its owner)", ch, n)
		}
	}
	if n, err := app.SPublish(ctx, "notify:connected-nowhere", "x").Result(); err != nil || n != 0 {
		t.Errorf("SPUBLISH to a user connected nowhere = %d, %v, want 0", n, err)
	}
	w.stop()
	var subs map[string]int64
	await.Poll(20*time.Second, func() bool {
		subs = shardNumSub(t, ctx, rc, channels)
		for _, n := range subs {
			if n != 0 {
				return false
			}
		}
		return true
	})
	for ch, n := range subs {
		if n != 0 {
			t.Errorf("PUBSUB SHARDNUMSUB %s = %d after every client left, want 0", ch, n)
		}
	}
}

// shardNumSub sums PUBSUB SHARDNUMSUB of each channel over the masters
// (only the master of a channel's slot counts it).
func shardNumSub(t *testing.T, ctx context.Context, rc *redistest.Cluster, channels []string) map[string]int64 {
	t.Helper()
	out := make(map[string]int64, len(channels))
	for _, m := range rc.Masters {
		args := append([]any{"PUBSUB", "SHARDNUMSUB"}, anys(channels)...)
		v, err := m.Client(t).Do(ctx, args...).Slice()
		if err != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB on %s: %v", m.Addr, err)
		}
		for i := 0; i+1 < len(v); i += 2 {
			ch, _ := v[i].(string)
			n, _ := v[i+1].(int64)
			out[ch] += n
		}
	}
	return out
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

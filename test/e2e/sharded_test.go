package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

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
	nodes, lb := e.startThreeBehindHAProxy(t)
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
	channels := userChannels(w)
	shardNumSub := func() (map[string]int64, error) { return rc.ShardNumSub(channels...), nil }
	expectSubscribers(t, "PUBSUB SHARDNUMSUB over the masters", shardNumSub, 1)
	if n, err := app.SPublish(ctx, "notify:connected-nowhere", "x").Result(); err != nil || n != 0 {
		t.Errorf("SPUBLISH to a user connected nowhere = %d, %v, want 0", n, err)
	}
	w.stop()
	awaitUnsubscribed(t, "PUBSUB SHARDNUMSUB over the masters", shardNumSub)
}

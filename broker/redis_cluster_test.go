package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// clusterSettle bounds how long a cluster takes to be whole again after a
// master is back (the others clear its FAIL flag some node timeouts later).
const clusterSettle = 30 * time.Second

func clusterConfig(c *redistest.Cluster) RedisConfig { return RedisConfig{ClusterAddrs: c.Addrs()} }

// expectSet reads len(want) messages from rec, in any order (publishes on
// different masters reach the subscription over the bus in no set order),
// and then nothing more.
func (r *recorder) expectSet(t *testing.T, want ...msg) {
	t.Helper()
	left := map[msg]int{}
	for _, w := range want {
		left[w]++
	}
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for range want {
		select {
		case got := <-r.ch:
			if left[got] == 0 {
				t.Fatalf("unexpected (or duplicate) message %q", got)
			}
			left[got]--
		case <-timer.C:
			t.Fatalf("timed out; still waiting for %v", left)
		}
	}
}

// usersOnEveryMaster returns one user per master whose history keys that
// master serves, and a state key on each.
func usersOnEveryMaster(t *testing.T, c *redistest.Cluster) map[string]string {
	t.Helper()
	users := map[string]string{} // master addr -> user
	for i := 0; len(users) < len(c.Masters); i++ {
		u := fmt.Sprint("user", i)
		m := c.MasterFor("{" + UserChannel(u) + "}:history")
		if _, ok := users[m.Addr]; !ok {
			users[m.Addr] = u
		}
	}
	return users
}

func TestRedisClusterDelivery(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newTopologyRedis(t, clusterConfig(c), HistoryConfig{})
	rec := runReady(t, r)
	ctx := context.Background()

	// The subscription is on one node; a PUBLISH on any master reaches it
	// (classic pub/sub is broadcast over the cluster bus), once.
	var want []msg
	for i, m := range c.Masters {
		ch := UserChannel(fmt.Sprint("u", i))
		if n, err := m.Client(t).Publish(ctx, ch, "from "+m.Addr).Result(); err != nil {
			t.Fatalf("PUBLISH on %s: %v (%d receivers)", m.Addr, err, n)
		}
		want = append(want, msg{ch, "from " + m.Addr})
	}
	rec.expectSet(t, want...)
	if err := r.PublishMany(ctx, []string{TopicChannel("a"), TopicChannel("b"), UserChannel("x")}, []byte("many")); err != nil {
		t.Fatal(err)
	}
	rec.expectSet(t, msg{TopicChannel("a"), "many"}, msg{TopicChannel("b"), "many"}, msg{UserChannel("x"), "many"})
	if err := r.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	rec.expectNothing(t)
}

func TestRedisClusterState(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newTopologyRedis(t, clusterConfig(c), HistoryConfig{})
	ctx := context.Background()
	onMaster := map[string]int{}
	for i := range 60 {
		u := fmt.Sprint("state", i)
		if err := r.SetState(ctx, u, map[string]string{"n": fmt.Sprint(i), "drop": "x"}); err != nil {
			t.Fatalf("SetState(%s): %v", u, err)
		}
		if err := r.DeleteState(ctx, u, "drop"); err != nil {
			t.Fatalf("DeleteState(%s): %v", u, err)
		}
		got, err := r.GetState(ctx, u)
		if err != nil || len(got) != 1 || got["n"] != fmt.Sprint(i) {
			t.Fatalf("GetState(%s) = %v, %v", u, got, err)
		}
		// Applications read the same hash straight from its master.
		m := c.MasterFor(StateKey(u))
		if v, err := m.Client(t).HGet(ctx, StateKey(u), "n").Result(); err != nil || v != fmt.Sprint(i) {
			t.Fatalf("HGET %s on %s = %q, %v", StateKey(u), m.Addr, v, err)
		}
		onMaster[m.Addr]++
	}
	if len(onMaster) != 3 {
		t.Fatalf("state hashes on %d masters (%v), want 3", len(onMaster), onMaster)
	}
}

func TestRedisClusterHistory(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newTopologyRedis(t, clusterConfig(c), HistoryConfig{Size: 10, TTL: time.Hour})
	rec := runHistory(t, r)
	await.True(t, "the library loaded on every master", func() bool { return loads(r) >= 3 })
	ctx := context.Background()
	for addr, u := range usersOnEveryMaster(t, c) {
		checkHistoryOn(t, r, user(u))
		if d := rec.next(t); d.t != user(u) || d.m.Payload != "kept" {
			t.Fatalf("delivery %+v, want kept to %s", d, u)
		}
		if n, err := c.MasterFor(UserChannel(u)).Client(t).Exists(ctx, "{"+UserChannel(u)+"}:history").Result(); err != nil || n != 1 {
			t.Fatalf("history of %s not on its master %s: %d, %v", u, addr, n, err)
		}
		hr, err := r.Read(ctx, user(u), Cursor{})
		if err != nil || len(hr.Entries) != 1 {
			t.Fatalf("Read(%s) = %+v, %v", u, hr, err)
		}
		e := hr.Entries[0].Cursor
		if err := r.Received(ctx, u, e); err != nil {
			t.Fatalf("Received(%s): %v", u, err)
		}
		if ok, err := r.Claim(ctx, u, e, time.Minute); err != nil || ok {
			t.Fatalf("Claim(%s) of a received entry = %v, %v; want false", u, ok, err)
		}
		if n, err := r.Newest(ctx, user(u)); err != nil || n != e {
			t.Fatalf("Newest(%s) = %v, %v; want %v", u, n, err, e)
		}
	}
	// One call with a target on every master, pipelined.
	var targets []Target
	for _, u := range usersOnEveryMaster(t, c) {
		targets = append(targets, user(u))
	}
	if cs, err := r.Append(ctx, targets, []byte("all"), ""); err != nil || len(cs) != 3 {
		t.Fatalf("Append to every master = %v, %v", cs, err)
	}
}

func TestRedisClusterMasterDown(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newTopologyRedis(t, clusterConfig(c), HistoryConfig{Size: 10, TTL: time.Hour})
	rec := runHistory(t, r)
	await.True(t, "the library loaded on every master", func() bool { return loads(r) >= 3 })
	users := usersOnEveryMaster(t, c)
	// A master the subscription is not on: the probe keeps making the
	// round trip, so only the check of every master sees it gone.
	down := notSubscribedOn(t, c)

	down.Stop()
	await.True(t, "Ready() naming the stopped master", func() bool {
		err := r.Ready()
		return err != nil && strings.Contains(err.Error(), down.Addr)
	})
	t.Logf("Ready() = %v", r.Ready())
	// Once the others mark it failed, they refuse keys of every slot.
	c.WaitFail()
	var healthy string
	for addr, u := range users {
		if addr != down.Addr {
			healthy = u
		}
	}
	if _, err := r.GetState(context.Background(), healthy); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("GetState during CLUSTERDOWN = %v, want ErrUnavailable", err)
	}
	if err := r.Ready(); err == nil {
		t.Fatal("Ready() == nil with a master down")
	}

	// Back without its data and without the library. The others clear its
	// FAIL flag only some node timeouts later: until then Ready fails.
	down.Restart()
	back := time.Now()
	await.Within(t, clusterSettle, "Ready() == nil with every master back", func() bool {
		if r.Ready() != nil {
			return false
		}
		if !c.OK() {
			t.Error("Ready() == nil while a master reports cluster_state:fail")
		}
		return true
	})
	t.Logf("ready %s after the master was back", time.Since(back).Round(time.Millisecond))
	before := loads(r)
	checkHistoryOn(t, r, user(users[down.Addr]))
	if d := rec.next(t); d.m.Payload != "kept" {
		t.Fatalf("delivery %+v, want kept", d)
	}
	// The call that found the library missing loaded it on that master only.
	if n := loads(r) - before; n != 1 {
		t.Fatalf("%d loads for one restarted master, want 1", n)
	}
	if out, err := down.Client(t).FunctionList(context.Background(), redis.FunctionListQuery{}).Result(); err != nil || len(out) != 1 {
		t.Fatalf("FUNCTION LIST on the restarted master = %v, %v", out, err)
	}
}

func TestRedisClusterSubscribedMasterDown(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newTopologyRedis(t, clusterConfig(c), HistoryConfig{})
	rec := runReady(t, r)
	on := subscribedOn(t, c, true)

	on.Stop()
	await.True(t, "Ready() != nil", func() bool { return r.Ready() != nil })
	on.Restart()
	await.Within(t, clusterSettle, "Ready() == nil with every master back", func() bool { return r.Ready() == nil })
	ctx := context.Background()
	var want []msg
	for _, m := range c.Masters {
		if err := m.Client(t).Publish(ctx, TopicChannel("t"), m.Addr).Err(); err != nil {
			t.Fatal(err)
		}
		want = append(want, msg{TopicChannel("t"), m.Addr})
	}
	rec.expectSet(t, want...)
}

// notSubscribedOn returns a master that holds no pattern subscription.
func notSubscribedOn(t *testing.T, c *redistest.Cluster) *redistest.Server {
	t.Helper()
	return subscribedOn(t, c, false)
}

// subscribedOn returns a master that holds the broker's pattern
// subscription (PSUBSCRIBE of two patterns), or, with want false, one that
// holds none.
func subscribedOn(t *testing.T, c *redistest.Cluster, want bool) *redistest.Server {
	t.Helper()
	for _, m := range c.Masters {
		out, err := m.Client(t).ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "psub=2") == want {
			return m
		}
	}
	t.Fatalf("no master with the subscription = %v", want)
	return nil
}

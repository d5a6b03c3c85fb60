package broker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/internal/service"
)

// newShardedRedis is a broker in SubscribeSharded on the Cluster c.
func newShardedRedis(t testing.TB, c *redistest.Cluster, delay time.Duration, hist HistoryConfig) *Redis {
	t.Helper()
	return newConfiguredRedis(t, clusterConfig(c), RedisOptions{Subscribe: SubscribeSharded, UnsubscribeDelay: delay, History: hist})
}

// shardNumSub is PUBSUB SHARDNUMSUB of channel on the master s.
func shardNumSub(t *testing.T, s *redistest.Server, channel string) int64 {
	t.Helper()
	return s.ShardNumSub(t, channel)[channel]
}

// usersOnEachMaster returns one user whose channel's slot is on each
// master, in the order of c.Masters.
func usersOnEachMaster(t *testing.T, c *redistest.Cluster) []Target {
	t.Helper()
	found := map[*redistest.Server]Target{}
	for i := 0; len(found) < len(c.Masters); i++ {
		u := Target{Name: fmt.Sprint("s", i)}
		m := c.SlotOwner(keySlot(u.Channel()))
		if _, ok := found[m]; !ok {
			found[m] = u
		}
	}
	out := make([]Target, len(c.Masters))
	for i, m := range c.Masters {
		out[i] = found[m]
	}
	return out
}

func TestKeySlotMatchesRedis(t *testing.T) {
	s := redistest.StartCluster(t, 3).Masters[0]
	keys := []string{"", "notify:42", "notify_topic:news", "foo", "{user1000}.following", "{user1000}.followers",
		"foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{", "}", "{}", "a{b", "notify:é", "\x00\xff", "notify_topic:{notify:s0}x"}
	for i := range 200 {
		keys = append(keys, "notify:"+strconv.Itoa(i*7919))
	}
	for _, k := range keys {
		want, err := s.Client(t).ClusterKeySlot(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(k); int64(got) != want {
			t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
	}
}

func TestBySlot(t *testing.T) {
	a1, a2 := "{a}1", "{a}2"
	got := bySlot([]string{a1, "notify:1", a2})
	if len(got) != 2 || len(got[0]) != 2 || got[0][0] != a1 || got[0][1] != a2 || got[1][0] != "notify:1" {
		t.Fatalf("bySlot = %q", got)
	}
}

func TestShardedNeedsCluster(t *testing.T) {
	s := redistest.Start(t)
	top, err := RedisConfig{Addr: s.Addr}.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRedisTopology(top, RedisOptions{Subscribe: SubscribeSharded}); err == nil {
		t.Fatal("sharded mode on one server: no error")
	}
}

// In sharded mode a node SSUBSCRIBEs each wanted channel on the master of
// its slot: SPUBLISH there (and Publish, which uses it) reaches it, a
// classic PUBLISH reaches nobody, and the channel is unsubscribed after
// the delay once unwanted.
func TestRedisShardedDelivery(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newShardedRedis(t, c, 300*time.Millisecond, HistoryConfig{})
	rec := runReady(t, r)
	ctx := context.Background()
	cc := c.Client(t)

	users := usersOnEachMaster(t, c)
	topic := Target{Topic: true, Name: "sport"}
	for _, u := range users {
		r.Want(u)
	}
	r.Want(topic)
	awaitTargets(t, r, append(users, topic)...)
	for i, u := range users {
		if n := shardNumSub(t, c.Masters[i], u.Channel()); n != 1 {
			t.Fatalf("SHARDNUMSUB %s on its master = %d, want 1", u.Channel(), n)
		}
	}
	if got := r.shards.Subscribed(); got != len(users)+1 {
		t.Fatalf("Subscribed() = %d, want %d", got, len(users)+1)
	}
	if n, err := cc.Publish(ctx, users[0].Channel(), "classic").Result(); err != nil || n != 0 {
		t.Fatalf("classic PUBLISH = %d, %v: want 0 receivers in sharded mode", n, err)
	}
	if n, err := cc.SPublish(ctx, "notify:nobody", "x").Result(); err != nil || n != 0 {
		t.Fatalf("SPUBLISH to a user with no client = %d, %v, want 0", n, err)
	}
	var want []msg
	for i, u := range users {
		if n, err := cc.SPublish(ctx, u.Channel(), "s"+strconv.Itoa(i)).Result(); err != nil || n != 1 {
			t.Fatalf("SPUBLISH %s = %d, %v, want 1", u.Channel(), n, err)
		}
		want = append(want, msg{u.Channel(), "s" + strconv.Itoa(i)})
	}
	if err := r.PublishMany(ctx, []string{users[1].Channel(), topic.Channel()}, []byte("many")); err != nil {
		t.Fatal(err)
	}
	want = append(want, msg{users[1].Channel(), "many"}, msg{topic.Channel(), "many"})
	if err := r.Publish(ctx, ControlChannel, []byte("ctl")); err != nil {
		t.Fatal(err)
	}
	rec.expectSet(t, append(want, msg{ControlChannel, "ctl"})...)
	rec.expectNothing(t)

	r.Unwant(users[0])
	await.True(t, "the unwanted channel unsubscribed after the delay", func() bool {
		return shardNumSub(t, c.Masters[0], users[0].Channel()) == 0
	})
	if got := r.shards.Subscribed(); got != len(users) {
		t.Fatalf("Subscribed() = %d after one Unwant, want %d", got, len(users))
	}
}

// With history on, Append publishes with notify_spublish: the entry is
// kept and the message reaches the sharded subscription with its cursor.
func TestRedisShardedHistory(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newShardedRedis(t, c, 0, HistoryConfig{Size: 10, TTL: time.Hour})
	rec := &timedRecorder{t: t, ch: make(chan arrival, 100)}
	runReadyWith(t, r, rec)
	u := usersOnEachMaster(t, c)[2]
	r.Want(u)
	awaitTargets(t, r, u)
	cursors, err := r.Append(context.Background(), []Target{u}, []byte("kept"), "")
	if err != nil {
		t.Fatal(err)
	}
	if a := rec.next(t); a.payload != "kept" {
		t.Fatalf("delivered %q, want %q", a.payload, "kept")
	}
	hr := mustRead(t, r, u, Cursor{Epoch: cursors[0].Epoch})
	if len(hr.Entries) != 1 || hr.Entries[0].Payload != "kept" {
		t.Fatalf("Read = %+v", hr)
	}
}

// A slot migrated while messages flow: the old master drops the channel
// (SUNSUBSCRIBE), the broker subscribes it on the new one, and delivery
// resumes within failoverResume, in order, without duplicates.
func TestRedisShardedSlotMigration(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newShardedRedis(t, c, 0, HistoryConfig{})
	rec := &timedRecorder{t: t, ch: make(chan arrival, 100000)}
	runReadyWith(t, r, rec)
	u := usersOnEachMaster(t, c)[0]
	slot := keySlot(u.Channel())
	r.Want(u)
	awaitTargets(t, r, u)

	published := publishSequence(t, r, u.Channel(), 2*time.Millisecond)
	seq := &sequenceReader{rec: rec}
	next := func() int { t.Helper(); return seq.next(t) }
	for next() < 50 {
	}
	c.MigrateSlot(slot, c.Masters[1])
	after := published()
	moved := time.Now()
	for next() <= after {
	}
	if d := time.Since(moved); d > failoverResume {
		t.Fatalf("delivery resumed %s after the migration, want within %s", d, failoverResume)
	}
	// What Redis dropped between the old master's SUNSUBSCRIBE and the
	// SSUBSCRIBE on the new one (publishes every 2 ms).
	t.Logf("migration: %d messages missed; longest gap %s (from %s)", seq.missed, seq.gap, seq.gapFrom.Format("15:04:05.000"))
	if n := shardNumSub(t, c.Masters[1], u.Channel()); n != 1 {
		t.Fatalf("SHARDNUMSUB on the new master = %d, want 1", n)
	}
	if n := shardNumSub(t, c.Masters[0], u.Channel()); n != 0 {
		t.Fatalf("SHARDNUMSUB on the old master = %d, want 0", n)
	}
	// A Want after the move goes to the new master directly.
	t2 := Target{Topic: true, Name: "{" + u.Channel() + "}x"} // the hash tag puts it in slot
	r.Want(t2)
	awaitTargets(t, r, t2)
	if n := shardNumSub(t, c.Masters[1], t2.Channel()); n != 1 {
		t.Fatalf("SHARDNUMSUB %s on the new master = %d, want 1", t2.Channel(), n)
	}
}

// publishSequence publishes 1, 2, 3, ... on channel through r every
// interval until the test ends, and returns the last number published.
func publishSequence(t *testing.T, r *Redis, channel string, interval time.Duration) (published func() int) {
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	last := 0
	wg.Go(func() {
		for i := 1; ctx.Err() == nil; i++ {
			if err := r.Publish(ctx, channel, []byte(strconv.Itoa(i))); err == nil {
				mu.Lock()
				last = i
				mu.Unlock()
			}
			if !service.Sleep(ctx, interval) {
				return
			}
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// sequenceReader reads publishSequence's numbers from rec, failing on one
// out of order or twice, and counts the numbers missed and the longest
// gap between two arrivals around them.
type sequenceReader struct {
	rec     *timedRecorder
	last    int
	missed  int
	prevAt  time.Time
	gap     time.Duration
	gapFrom time.Time
}

func (s *sequenceReader) next(t *testing.T) int {
	t.Helper()
	a := s.rec.next(t)
	n, err := strconv.Atoi(a.payload)
	if err != nil || n <= s.last {
		t.Fatalf("message %d after %d: out of order or duplicate (%v)", n, s.last, err)
	}
	if n > s.last+1 {
		s.missed += n - s.last - 1
		if d := a.at.Sub(s.prevAt); d > s.gap {
			s.gap, s.gapFrom = d, s.prevAt
		}
	}
	s.last, s.prevAt = n, a.at
	return n
}

// A master restarted: its shard reconnects and resubscribes, Ready fails
// meanwhile and names the shard or the master, and delivery resumes.
func TestRedisShardedMasterRestart(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	r := newShardedRedis(t, c, 0, HistoryConfig{})
	rec := runReady(t, r)
	users := usersOnEachMaster(t, c)
	for _, u := range users {
		r.Want(u)
	}
	awaitTargets(t, r, users...)
	c.Masters[2].Restart()
	await.True(t, "Ready() fails", func() bool { return r.Ready() != nil })
	c.WaitOK()
	await.Within(t, clusterSettle, "Ready() == nil again", func() bool { return r.Ready() == nil })
	awaitTargets(t, r, users...)
	ctx := context.Background()
	for _, u := range users {
		if err := r.Publish(ctx, u.Channel(), []byte("back")); err != nil {
			t.Fatal(err)
		}
	}
	var want []msg
	for _, u := range users {
		want = append(want, msg{u.Channel(), "back"})
	}
	rec.expectSet(t, want...)
	if n := shardNumSub(t, c.Masters[2], users[2].Channel()); n != 1 {
		t.Fatalf("SHARDNUMSUB on the restarted master = %d, want 1", n)
	}
}

func TestSlotOwners(t *testing.T) {
	master := func(endpoint, ip string, port int64) redis.Node {
		return redis.Node{Role: "master", Endpoint: endpoint, IP: ip, Port: port}
	}
	replica := redis.Node{Role: "replica", Endpoint: "10.0.0.9", Port: 7000}
	whole := []redis.ClusterShard{
		{Slots: []redis.SlotRange{{Start: 0, End: 8000}}, Nodes: []redis.Node{replica, master("10.0.0.1", "10.0.0.1", 7000)}},
		{Slots: []redis.SlotRange{{Start: 8001, End: 9000}, {Start: 9001, End: 16383}}, Nodes: []redis.Node{master("?", "10.0.0.2", 7001)}},
	}
	owner, err := slotOwners(whole)
	if err != nil {
		t.Fatal(err)
	}
	for slot, want := range map[int]string{0: "10.0.0.1:7000", 8000: "10.0.0.1:7000", 8001: "10.0.0.2:7001", 16383: "10.0.0.2:7001"} {
		if owner[slot] != want {
			t.Errorf("slot %d on %q, want %q", slot, owner[slot], want)
		}
	}
	gap := []redis.ClusterShard{whole[0]}
	if _, err := slotOwners(gap); err == nil || !strings.Contains(err.Error(), "slot 8001") {
		t.Fatalf("slots without a master: %v, want an error naming slot 8001", err)
	}
}

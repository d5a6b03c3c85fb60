package broker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// newUserRedis is a broker in SubscribeUser on addr.
func newUserRedis(t testing.TB, addr string, delay time.Duration) *Redis {
	t.Helper()
	return newConfiguredRedis(t, RedisConfig{Addr: addr}, RedisOptions{Subscribe: SubscribeUser, UnsubscribeDelay: delay})
}

// numsub is PUBSUB NUMSUB of channel.
func numsub(t *testing.T, s *redistest.Server, channel string) int64 {
	t.Helper()
	m, err := s.Client(t).PubSubNumSub(context.Background(), channel).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m[channel]
}

func awaitTargets(t *testing.T, r *Redis, targets ...Target) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Await(ctx, targets...); err != nil {
		t.Fatal(err)
	}
}

func TestParseSubscribeMode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want SubscribeMode
		ok   bool
	}{{"", SubscribePattern, true}, {"pattern", SubscribePattern, true}, {"user", SubscribeUser, true}, {"sharded", SubscribeSharded, true}, {"shard", "", false}, {"USER", "", false}} {
		got, err := ParseSubscribeMode(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseSubscribeMode(%q) = %q, %v", tt.in, got, err)
		}
	}
}

// In user mode a node subscribes to the channels of its clients only:
// PUBLISH counts the nodes that serve the user (0 for nobody), a channel
// is unsubscribed after the delay, and a Want within the delay keeps it.
func TestRedisUserModeSubscribesWanted(t *testing.T) {
	s := redistest.Start(t)
	r := newUserRedis(t, s.Addr, 300*time.Millisecond)
	rec := runReady(t, r)
	c := s.Client(t)
	ctx := context.Background()

	if n, err := c.Publish(ctx, "notify:nobody", "x").Result(); err != nil || n != 0 {
		t.Fatalf("PUBLISH to a user with no client = %d, %v, want 0", n, err)
	}
	u, topic := Target{Name: "u1"}, Target{Topic: true, Name: "sport"}
	r.Want(u)
	r.Want(topic)
	awaitTargets(t, r, u, topic)
	if n := numsub(t, s, "notify:u1"); n != 1 {
		t.Fatalf("NUMSUB notify:u1 = %d after Await, want 1", n)
	}
	for _, m := range []msg{{"notify:u1", "a"}, {"notify_topic:sport", "b"}, {"notify:nobody", "c"}, {"notify:u1", "d"}} {
		if err := c.Publish(ctx, m.channel, m.payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rec.expect(t, msg{"notify:u1", "a"}, msg{"notify_topic:sport", "b"}, msg{"notify:u1", "d"})
	if got := r.interest.Subscribed(); got != 2 {
		t.Fatalf("Subscribed() = %d, want 2", got)
	}

	// Leaving and coming back within the delay keeps the subscription.
	r.Unwant(u)
	r.Want(u)
	r.Unwant(topic)
	await.True(t, "topic unsubscribed after the delay", func() bool { return numsub(t, s, "notify_topic:sport") == 0 })
	if n := numsub(t, s, "notify:u1"); n != 1 {
		t.Fatalf("NUMSUB notify:u1 = %d after a rejoin within the delay, want 1", n)
	}
	r.Unwant(u)
	await.True(t, "user unsubscribed after the delay", func() bool { return numsub(t, s, "notify:u1") == 0 })
	await.True(t, "no subscription counted", func() bool { return r.interest.Subscribed() == 0 })
	if n, _ := c.Publish(ctx, "notify:u1", "late").Result(); n != 0 {
		t.Fatalf("PUBLISH after the last client left = %d, want 0", n)
	}
	rec.expectNothing(t)
}

// After the pub/sub connection is cut every wanted channel is subscribed
// again, in batches, and Await waits for it.
func TestRedisUserModeResubscribes(t *testing.T) {
	s := redistest.Start(t)
	r := newUserRedis(t, s.Addr, 0)
	rec := runReady(t, r)
	const users = 3*subscribeBatch + 7
	var all []Target
	for i := range users {
		all = append(all, Target{Name: fmt.Sprint("u", i)})
		r.Want(all[i])
	}
	awaitTargets(t, r, all...)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// The kill is seen when the reader reads EOF: wait for the new session.
	await.True(t, "subscribed again", func() bool { return testutil.ToFloat64(r.metrics.reconnects) == 1 })
	await.True(t, "every channel subscribed again", func() bool { return r.interest.Subscribed() == users })
	awaitTargets(t, r, all...)
	// The control and probe channels, then the users in batches: go-redis
	// did not resubscribe them all in one command.
	stats, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	batches := (users + subscribeBatch - 1) / subscribeBatch
	if want := fmt.Sprintf("cmdstat_subscribe:calls=%d,", 1+batches); !strings.Contains(stats, want) {
		t.Fatalf("INFO commandstats has no %q:\n%s", want, stats)
	}
	for _, i := range []int{0, users / 2, users - 1} {
		ch := UserChannel(all[i].Name)
		if n, err := c.Publish(ctx, ch, "after").Result(); err != nil || n != 1 {
			t.Fatalf("PUBLISH %s = %d, %v after the resubscribe, want 1", ch, n, err)
		}
		rec.expect(t, msg{ch, "after"})
	}
	// One connection: nothing subscribed twice.
	if n, err := c.PubSubNumSub(ctx, "notify:u0").Result(); err != nil || n["notify:u0"] != 1 {
		t.Fatalf("NUMSUB = %v, %v", n, err)
	}
}

// Await gives up with the caller's context while Redis is down.
func TestRedisUserModeAwaitUnavailable(t *testing.T) {
	s := redistest.Start(t)
	r := newUserRedis(t, s.Addr, 0)
	runReady(t, r)
	s.Stop()
	u := Target{Name: "late"}
	r.Want(u)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := r.Await(ctx, u); err == nil {
		t.Fatal("Await succeeded with Redis down")
	}
	s.Restart()
	awaitTargets(t, r, u)
}

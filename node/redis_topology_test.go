package node

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/redistest"
)

// A node on Redis Sentinel and on a Redis Cluster (classic and sharded
// pub/sub): an application's HSET and PUBLISH (SPUBLISH when sharded),
// through its own client of that topology, reach a WebSocket client.
func TestRedisTopologies(t *testing.T) {
	tests := []struct {
		name    string
		sharded bool // NOTIFY_SUBSCRIBE_MODE=sharded: the application SPUBLISHes
		start   func(t *testing.T) (broker.RedisConfig, redis.UniversalClient)
	}{
		{"sentinel", false, func(t *testing.T) (broker.RedisConfig, redis.UniversalClient) {
			st := redistest.StartSentinel(t)
			app := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.SentinelMaster, SentinelAddrs: st.Addrs()})
			t.Cleanup(func() { _ = app.Close() })
			return broker.RedisConfig{SentinelAddrs: st.Addrs(), SentinelMaster: redistest.SentinelMaster}, app
		}},
		{"cluster", false, func(t *testing.T) (broker.RedisConfig, redis.UniversalClient) {
			c := redistest.StartCluster(t, 3)
			return broker.RedisConfig{ClusterAddrs: c.Addrs()}, c.Client(t)
		}},
		{"cluster sharded", true, func(t *testing.T) (broker.RedisConfig, redis.UniversalClient) {
			c := redistest.StartCluster(t, 3)
			return broker.RedisConfig{ClusterAddrs: c.Addrs()}, c.Client(t)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, app := tt.start(t)
			tn := startNode(t, nil, func(c *Config) {
				c.Redis = cfg
				if tt.sharded {
					c.SubscribeMode = string(broker.SubscribeSharded)
				}
			})
			tn.waitReady(200)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := app.HSet(ctx, broker.StateKey("42"), "plan", "pro").Err(); err != nil {
				t.Fatal(err)
			}
			ws := tn.dial(token(t, "42", []string{"news"}, time.Hour), "topic=news")
			if st := ws.handshake("42"); st["plan"] != "pro" {
				t.Fatalf("state %v, want plan=pro", st)
			}
			for _, ch := range []string{broker.UserChannel("42"), broker.TopicChannel("news")} {
				publish := app.Publish
				if tt.sharded {
					publish = app.SPublish
				}
				if err := publish(ctx, ch, "to "+ch).Err(); err != nil {
					t.Fatal(err)
				}
				if got := ws.readString(); got != "to "+ch {
					t.Fatalf("got %q, want %q", got, "to "+ch)
				}
			}
		})
	}
}

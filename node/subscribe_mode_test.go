package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// userMode starts a node with NOTIFY_SUBSCRIBE_MODE=user on rs, channels
// unsubscribed 200 ms after their last client, and the API on.
func userMode(c *Config) {
	c.SubscribeMode = string(broker.SubscribeUser)
	c.UnsubscribeDelay = 200 * time.Millisecond
	c.APIKey = testAPIKey
}

// numsub is PUBSUB NUMSUB of each channel.
func (tn *testNode) numsub(channels ...string) map[string]int64 {
	tn.t.Helper()
	m, err := tn.redis.PubSubNumSub(context.Background(), channels...).Result()
	if err != nil {
		tn.t.Fatal(err)
	}
	return m
}

// publishCount publishes and returns PUBLISH's answer: the subscribers.
func (tn *testNode) publishCount(channel, payload string) int64 {
	tn.t.Helper()
	n, err := tn.redis.Publish(context.Background(), channel, payload).Result()
	if err != nil {
		tn.t.Fatal(err)
	}
	return n
}

// In user mode a node subscribes to the channels of its clients only,
// before their state is read, and leaves them after the last goes.
func TestUserSubscribeMode(t *testing.T) {
	rs := redistest.Start(t)
	tn := startNode(t, rs, userMode)
	tn.waitReady(200)
	user, topic := broker.UserChannel("42"), broker.TopicChannel("news")
	if n := tn.publishCount(user, "before"); n != 0 {
		t.Fatalf("PUBLISH to a user connected nowhere = %d, want 0", n)
	}
	ws := tn.dial(token(t, "42", []string{"news"}, time.Hour), "topic=news")
	ws.handshake("42")
	if m := tn.numsub(user, topic); m[user] != 1 || m[topic] != 1 {
		t.Fatalf("NUMSUB %v with a client connected, want 1 each", m)
	}
	if got := tn.metric("notify_broker_subscriptions"); got != 2 {
		t.Fatalf("notify_broker_subscriptions = %v, want 2", got)
	}
	for _, ch := range []string{user, topic} {
		if n := tn.publishCount(ch, "to "+ch); n != 1 {
			t.Fatalf("PUBLISH %s = %d, want 1 (this node)", ch, n)
		}
		if got := ws.readString(); got != "to "+ch {
			t.Fatalf("got %q, want %q", got, "to "+ch)
		}
	}
	// A second connection of the user costs no second subscription.
	ws2 := tn.dial(token(t, "42", nil, time.Hour), "")
	ws2.handshake("42")
	if m := tn.numsub(user); m[user] != 1 {
		t.Fatalf("NUMSUB %v with two connections, want 1", m)
	}
	// Publish counts the connections of the users that took it.
	expectConnections(t, tn.publishTo([]string{"42", "nobody"}, []string{"news"}, "counted"), 2)
	for _, c := range []*wsClient{ws, ws, ws2} { // ws as user 42 and through the topic
		if got := c.readString(); got != "counted" {
			t.Fatalf("got %q, want %q", got, "counted")
		}
	}
	ws.conn.CloseNow()
	ws2.conn.CloseNow()
	await.True(t, "channels unsubscribed after the last client left", func() bool {
		m := tn.numsub(user, topic)
		return m[user] == 0 && m[topic] == 0
	})
	if n := tn.publishCount(user, "after"); n != 0 {
		t.Fatalf("PUBLISH after the user left = %d, want 0", n)
	}
}

// Phoenix joins wait for their channel's subscription before the reply.
func TestUserSubscribeModePhoenix(t *testing.T) {
	rs := redistest.Start(t)
	tn := startPhoenixNode(t, rs, userMode)
	tn.waitReady(200)
	tn.redis.HSet(t.Context(), "notify:p1:state", "unread", "4")
	c := tn.phoenix(token(t, "p1", []string{"lobby"}, time.Hour), "2.0.0", nil)
	phxHeartbeatAndUserTopic(t, tn, c)
	phxGroupTopics(t, tn, c)
	if m := tn.numsub("notify:p1", "notify_topic:lobby"); m["notify:p1"] != 1 || m["notify_topic:lobby"] != 1 {
		t.Fatalf("NUMSUB %v, want 1 each", m)
	}
}

func TestSubscribeModeValidation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"unknown mode", func(c *Config) { c.Redis.Addr = "127.0.0.1:6379"; c.SubscribeMode = "shard" }},
		{"user mode without Redis", func(c *Config) { c.SubscribeMode = "user" }},
		{"sharded mode without Redis", func(c *Config) { c.SubscribeMode = "sharded" }},
		{"sharded mode on one server", func(c *Config) { c.Redis.Addr = "127.0.0.1:6379"; c.SubscribeMode = "sharded" }},
		{"sharded mode on Sentinel", func(c *Config) {
			c.Redis.SentinelAddrs, c.Redis.SentinelMaster = []string{"127.0.0.1:26379"}, "m"
			c.SubscribeMode = "sharded"
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Auth.Secret = testSecret
			tt.mutate(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "NOTIFY_SUBSCRIBE_MODE") {
				t.Fatalf("Validate: %v, want NOTIFY_SUBSCRIBE_MODE named", err)
			}
		})
	}
}

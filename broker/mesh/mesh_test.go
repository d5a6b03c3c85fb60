package mesh

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/await"
)

// TestRouting: a user's message reaches its owner only, a topic's and a
// node command every node, the publishing one included, whoever publishes.
func TestRouting(t *testing.T) {
	ms := startNet(t, []string{"a", "b", "c"}, nil)
	linksUp(t, ms)
	user := userOwnedBy(t, ms[0], "c", 0)
	tests := []struct {
		name    string
		channel string
		target  broker.Target
		control bool
		want    []bool // per node: got it
	}{
		{"user owned elsewhere", broker.UserChannel(user), broker.Target{Name: user}, false, []bool{false, false, true}},
		{"user owned here", broker.UserChannel(userOwnedBy(t, ms[0], "a", 0)), broker.Target{Name: userOwnedBy(t, ms[0], "a", 0)}, false, []bool{true, false, false}},
		{"topic", broker.TopicChannel("news"), broker.Target{Topic: true, Name: "news"}, false, []bool{true, true, true}},
		{"control", broker.ControlChannel, broker.Target{}, true, []bool{true, true, true}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := fmt.Sprint("p-", i)
			ms[0].publish(t, tt.channel, payload)
			got := func(m *testMesh) bool {
				if tt.control {
					return slices.Contains(m.rec.controls(), payload)
				}
				return slices.Contains(m.rec.payloads(tt.target), payload)
			}
			for j, m := range ms {
				if tt.want[j] {
					await.True(t, m.name+" got "+payload, func() bool { return got(m) })
				}
			}
			// The others: the ones that got it came through the same links.
			for j, m := range ms {
				if !tt.want[j] && got(m) {
					t.Errorf("%s got %s", m.name, payload)
				}
			}
		})
	}
	if got := ms[0].counter("notify_mesh_sent_total"); got != 1+2+2 {
		t.Errorf("sent %v, want 5 (one user message, a topic's and a command to two peers)", got)
	}
}

// TestOrderPerUser: several goroutines of one node publish to a user
// another node owns; each one's messages arrive once each, in its order.
func TestOrderPerUser(t *testing.T) {
	ms := startNet(t, []string{"a", "b"}, nil)
	user := userOwnedBy(t, ms[0], "b", 0)
	const publishers, each = 8, 500
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := ms[0].Publish(t.Context(), broker.UserChannel(user), fmt.Appendf(nil, "%d:%d", p, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	target := broker.Target{Name: user}
	await.True(t, "every message at the owner", func() bool { return len(ms[1].rec.payloads(target)) >= publishers*each })
	checkOrder(t, ms[1].rec.payloads(target), publishers, each)
}

// checkOrder checks that got holds "p:i" for every publisher p and i, once,
// in increasing i per p.
func checkOrder(t *testing.T, got []string, publishers, each int) {
	t.Helper()
	if len(got) != publishers*each {
		t.Fatalf("%d messages, want %d", len(got), publishers*each)
	}
	next := make([]int, publishers)
	for _, s := range got {
		var p, i int
		if _, err := fmt.Sscanf(s, "%d:%d", &p, &i); err != nil || p >= publishers {
			t.Fatalf("unexpected message %q", s)
		}
		if i != next[p] {
			t.Fatalf("publisher %d: got %d, want %d (out of order or twice)", p, i, next[p])
		}
		next[p]++
	}
}

// TestReconnectResendsOnce: a link whose connection breaks resends what was
// not acked, and the peer delivers each message once.
func TestReconnectResendsOnce(t *testing.T) {
	ms := startNet(t, []string{"a", "b"}, nil)
	linksUp(t, ms)
	user := userOwnedBy(t, ms[0], "b", 0)
	const each = 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range each {
			_ = ms[0].Publish(t.Context(), broker.UserChannel(user), fmt.Appendf(nil, "0:%d", i))
			if i%500 == 250 {
				ms[1].cutInbound()
			}
		}
	}()
	<-done
	target := broker.Target{Name: user}
	await.True(t, "every message at the owner", func() bool { return len(ms[1].rec.payloads(target)) >= each })
	checkOrder(t, ms[1].rec.payloads(target), 1, each)
	if got := ms[0].counter("notify_mesh_link_connects_total"); got < 2 {
		t.Errorf("connects %v: the cuts did not cut", got)
	}
}

// cutInbound closes every inbound link connection, as a network fault would.
func (tm *testMesh) cutInbound() {
	tm.inMu.Lock()
	defer tm.inMu.Unlock()
	for _, s := range tm.senders {
		s.lock()
		if s.conn != nil {
			s.conn.Close()
		}
		s.unlock()
	}
}

// TestUnreachablePeer: messages for a peer that cannot be reached wait for
// the retry period, then are dropped and counted; Ready fails once the
// link has been down for the grace, and recovers when the peer is gone
// from the membership.
func TestUnreachablePeer(t *testing.T) {
	ms := startNet(t, []string{"a", "b"}, func(_ string, o *options) {
		o.retry, o.grace = 300*time.Millisecond, 300*time.Millisecond
	})
	linksUp(t, ms)
	ms[1].stop()
	user := userOwnedBy(t, ms[0], "b", 0)
	for i := range 10 {
		ms[0].publish(t, broker.UserChannel(user), fmt.Sprint(i))
	}
	await.True(t, "drops counted", func() bool {
		return ms[0].counter("notify_mesh_dropped_total", "reason", reasonUnreachable) == 10
	})
	await.True(t, "not ready", func() bool { return ms[0].Ready() != nil })
	t.Logf("Ready: %v", ms[0].Ready())
	// The membership drops b: its link goes, and with it the reason.
	ms[0].Mesh.cfg.Directory.(directory).all.remove("b")
	ms[0].ring.set(t, "a")
	await.True(t, "ready again", func() bool { return ms[0].Ready() == nil })
}

// TestWrongSecret: a peer with another cluster secret refuses the link; it
// shows in Ready, and messages for it are dropped after the retry.
func TestWrongSecret(t *testing.T) {
	ms := startNet(t, []string{"a", "b"}, func(name string, o *options) {
		o.retry, o.grace = 300*time.Millisecond, 300*time.Millisecond
		if name == "b" {
			o.secret = "another-cluster-secret"
		}
	})
	await.True(t, "a not ready", func() bool { return ms[0].Ready() != nil })
	if err := ms[0].Ready(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("Ready: %v, want the 401 named", err)
	}
	if _, err := ms[0].GetState(t.Context(), userOwnedBy(t, ms[0], "b", 0)); err == nil {
		t.Error("GetState through a refused link succeeded")
	}
}

// TestQueueFull: beyond QueueBytes a user's message is refused with
// ErrUnavailable and counted.
func TestQueueFull(t *testing.T) {
	ms := startNet(t, []string{"a", "b"}, func(_ string, o *options) { o.queueBytes = 4096; o.retry = time.Minute })
	ms[1].stop()
	user := userOwnedBy(t, ms[0], "b", 0)
	var refused error
	for i := 0; refused == nil && i < 1000; i++ {
		refused = ms[0].Publish(t.Context(), broker.UserChannel(user), make([]byte, 100))
	}
	if refused == nil || !errors.Is(refused, broker.ErrUnavailable) {
		t.Fatalf("publish into a full queue: %v, want ErrUnavailable", refused)
	}
	if got := ms[0].counter("notify_mesh_dropped_total", "reason", reasonQueueFull); got != 1 {
		t.Errorf("queue_full drops %v, want 1", got)
	}
}

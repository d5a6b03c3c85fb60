package e2e

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/notify-dev/notify/internal/await"
)

// TestUserSubscribeMode: NOTIFY_SUBSCRIBE_MODE=user and a limit of three
// connections per user, three nodes behind haproxy, 900 clients of 300
// users. Every message arrives exactly once and in order; each connected
// user's channel has one subscriber, its owner (where every connection is
// relayed); PUBLISH to a user connected nowhere answers 0; a fourth
// connection of a user is refused with 429 on whichever node it lands;
// once the clients leave, no channel stays subscribed.
func TestUserSubscribeMode(t *testing.T) {
	requireTools(t, "haproxy", "redis-server")
	e := newEnv(t)
	e.nodeEnv = []string{"NOTIFY_SUBSCRIBE_MODE=user", "NOTIFY_MAX_CONNECTIONS_PER_USER=3"}
	nodes, lb := e.startThreeBehindHAProxy(t)
	rdb := e.redis.Client(t)
	w := newWorld(t, lb.addr, rdb, 300, 3)
	w.connect(t)
	w.waitSettled(t, newRing(t, names(nodes)...), 30*time.Second, false)
	w.round(t, 5)
	w.verify(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	channels := userChannels(w)
	numsub := func() (map[string]int64, error) { return rdb.PubSubNumSub(ctx, channels...).Result() }
	expectSubscribers(t, "PUBSUB NUMSUB", numsub, 1)
	if n, err := rdb.Publish(ctx, "notify:connected-nowhere", "x").Result(); err != nil || n != 0 {
		t.Errorf("PUBLISH to a user connected nowhere = %d, %v, want 0", n, err)
	}
	// Round robin: three tries land on every node once.
	for i := range 3 {
		if code := dialStatus(ctx, w.url, userToken(t, w.users[0])); code != http.StatusTooManyRequests {
			t.Errorf("fourth connection of %s, try %d: status %d, want 429", w.users[0], i+1, code)
		}
	}
	w.stop()
	awaitUnsubscribed(t, "PUBSUB NUMSUB", numsub)
}

// startThreeBehindHAProxy starts n1, n2 and n3 (127.0.0.2-4), each joining
// those before it, waits until all their rings list the three, and puts
// them behind haproxy, which sees every one up.
func (e *env) startThreeBehindHAProxy(t *testing.T) ([]*node, *haproxy) {
	t.Helper()
	nodes := []*node{e.planNode("n1", "127.0.0.2"), e.planNode("n2", "127.0.0.3"), e.planNode("n3", "127.0.0.4")}
	e.start(nodes[0], nil, true)
	e.start(nodes[1], []string{nodes[0].gossip}, true)
	e.start(nodes[2], []string{nodes[0].gossip, nodes[1].gossip}, true)
	waitRing(t, nodes, names(nodes))
	lb := e.startHAProxy(nodes)
	lb.waitServers(t, names(nodes)...)
	return nodes, lb
}

// userChannels are the channels of w's users.
func userChannels(w *world) []string {
	channels := make([]string, len(w.users))
	for i, u := range w.users {
		channels[i] = "notify:" + u
	}
	return channels
}

// expectSubscribers fails t unless count (what says how many subscribe to
// each channel) gives want for every one.
func expectSubscribers(t *testing.T, what string, count func() (map[string]int64, error), want int64) {
	t.Helper()
	subs, err := count()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for ch, n := range subs {
		if n != want {
			t.Errorf("%s %s = %d, want %d (its owner)", what, ch, n, want)
		}
	}
}

// awaitUnsubscribed waits until count gives 0 for every channel, failing t
// for those that still have subscribers after 20 s.
func awaitUnsubscribed(t *testing.T, what string, count func() (map[string]int64, error)) {
	t.Helper()
	var subs map[string]int64
	await.Poll(20*time.Second, func() bool {
		var err error
		if subs, err = count(); err != nil {
			return false
		}
		for _, n := range subs {
			if n != 0 {
				return false
			}
		}
		return true
	})
	for ch, n := range subs {
		if n != 0 {
			t.Errorf("%s %s = %d after every client left, want 0", what, ch, n)
		}
	}
}

// dialStatus makes a WebSocket handshake and returns the HTTP status it
// was answered with (101 when it succeeded, then closed).
func dialStatus(ctx context.Context, url, token string) int {
	d := ws.Dialer{Timeout: 10 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}})}
	conn, _, _, err := d.Dial(ctx, url)
	var status ws.StatusError
	switch {
	case err == nil:
		conn.Close()
		return http.StatusSwitchingProtocols
	case errors.As(err, &status):
		return int(status)
	}
	return 0
}

package node

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/api/notificationspb"
	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/transport"
)

// startMeshCluster starts n nodes with no Redis on the cluster broker,
// each joining those before it, with the API (Twirp, and gRPC for
// BroadcastTextMessage) and open topics.
func startMeshCluster(t *testing.T, n int, mutate func(i int, c *Config)) []*testNode {
	t.Helper()
	nodes := startCluster(t, nil, n, func(i int, c *Config) {
		c.Broker = brokerCluster
		c.History.Size = 0
		c.OpenTopics = true
		c.GRPCPort = "127.0.0.1:0"
		c.MeshReadyGrace = 500 * time.Millisecond
		if mutate != nil {
			mutate(i, c)
		}
	})
	for _, tn := range nodes {
		eventually(t, tn.cfg.NodeName+" links up", func() bool {
			return tn.metric("notify_mesh_links_up") == float64(len(tn.place.Peers()))
		})
	}
	return nodes
}

func (tn *testNode) publishTo(users, topics []string, text string) *notifypb.PublishResponse {
	tn.t.Helper()
	resp, err := tn.protoClient().Publish(withKey(tn.t, testAPIKey), &notifypb.PublishRequest{UserIds: users, Topics: topics, Text: text})
	if err != nil {
		tn.t.Fatalf("publish on %s: %v", tn.cfg.NodeName, err)
	}
	return resp
}

// expectConnections fails t unless resp counted want connections.
func expectConnections(t *testing.T, resp *notifypb.PublishResponse, want int32) {
	t.Helper()
	if resp.Connections == nil || *resp.Connections != want {
		t.Fatalf("Publish counted connections %d, want %d", resp.GetConnections(), want)
	}
}

// TestMeshUserPublish: an API publish on node-0 for a user node-2 owns
// reaches the user's client wherever it connected (relayed to the owner),
// as does a BroadcastTextMessage and a Disconnect made on another node.
func TestMeshUserPublish(t *testing.T) {
	nodes := startMeshCluster(t, 3, nil)
	user := userOwnedBy(t, nodes, "node-2", 0)
	owner := nodes[slices.IndexFunc(nodes, func(n *testNode) bool { return n.cfg.NodeName == "node-2" })]
	for _, entry := range nodes {
		c := entry.dial(token(t, user, nil, time.Hour), "")
		if got := c.resp.Header.Get("X-Notify-Node"); got != "node-2" {
			t.Fatalf("through %s: served by %q, want the owner", entry.cfg.NodeName, got)
		}
		c.handshake(user)
		text := "via " + entry.cfg.NodeName
		// node-0 asks the owner, node-2, how many took it.
		expectConnections(t, nodes[0].publishTo([]string{user, "nobody"}, nil, text), 1)
		if got := c.readString(); got != text {
			t.Fatalf("got %q, want %q", got, text)
		}
		c.conn.CloseNow()
		// The next count is of the next client alone.
		eventually(t, "the owner saw the close", func() bool { return owner.hub.Open() == 0 })
	}
	c := nodes[1].dial(token(t, user, nil, time.Hour), "")
	c.handshake(user)
	el := notificationspb.NewNotificationsServiceClient(nodes[1].grpcConn())
	if _, err := el.BroadcastTextMessage(grpcKey(t, testAPIKey), &notificationspb.BroadcastTextMessageRequest{
		Topics: []string{"user:" + user}, Event: "note", Message: "broadcast"}); err != nil {
		t.Fatal(err)
	}
	if got := c.readString(); got != "broadcast" {
		t.Fatalf("BroadcastTextMessage: got %q", got)
	}
	if _, err := nodes[0].protoClient().Disconnect(withKey(t, testAPIKey), &notifypb.DisconnectRequest{UserId: user}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(transport.CloseDisconnected)
	if got := nodes[0].metric("notify_mesh_sent_total"); got < 3 {
		t.Errorf("node-0 sent %v messages over its links", got)
	}
	if got := nodes[2].metric("notify_mesh_received_total"); got < 3 {
		t.Errorf("node-2 received %v messages over its links", got)
	}
}

// TestMeshTopicPublish: a topic's message published on one node reaches
// the topic's clients on every node.
func TestMeshTopicPublish(t *testing.T) {
	nodes := startMeshCluster(t, 3, nil)
	var clients []*wsClient
	for _, tn := range nodes {
		user := userOwnedBy(t, nodes, tn.cfg.NodeName, 0)
		c := tn.dial(token(t, user, nil, time.Hour), "topic=news")
		c.handshake(user)
		clients = append(clients, c)
	}
	for _, from := range nodes {
		text := "news from " + from.cfg.NodeName
		from.publishTo(nil, []string{"news"}, text)
		for i, c := range clients {
			if got := c.readString(); got != text {
				t.Fatalf("client on node-%d: got %q, want %q", i, got, text)
			}
		}
	}
}

// TestMeshOrderPerUser: concurrent API publishers on one node, for a user
// another node owns: every message arrives once, each publisher's in its
// order.
func TestMeshOrderPerUser(t *testing.T) {
	nodes := startMeshCluster(t, 3, nil)
	user := userOwnedBy(t, nodes, "node-2", 0)
	c := nodes[1].dial(token(t, user, nil, time.Hour), "")
	c.handshake(user)
	const publishers, each = 4, 150
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				_, err := nodes[0].protoClient().Publish(withKey(t, testAPIKey), &notifypb.PublishRequest{UserIds: []string{user}, Text: fmt.Sprintf("%d:%d", p, i)})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	next := make([]int, publishers)
	for range publishers * each {
		var p, i int
		s := c.readString()
		if _, err := fmt.Sscanf(s, "%d:%d", &p, &i); err != nil || p >= publishers {
			t.Fatalf("unexpected message %q", s)
		}
		if i != next[p] {
			t.Fatalf("publisher %d: got %d, want %d (out of order or twice)", p, i, next[p])
		}
		next[p]++
	}
	wg.Wait()
	c.expectSilence(100 * time.Millisecond)
}

// TestMeshState: state written through any node lives on the owner: a
// client connecting through another node reads it, every node's API too.
func TestMeshState(t *testing.T) {
	nodes := startMeshCluster(t, 3, nil)
	user := userOwnedBy(t, nodes, "node-2", 0)
	ctx := withKey(t, testAPIKey)
	if _, err := nodes[0].protoClient().SetState(ctx, &notifypb.SetStateRequest{UserId: user, Fields: map[string]string{"unread": "3", "theme": "dark"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].protoClient().DeleteState(ctx, &notifypb.DeleteStateRequest{UserId: user, Fields: []string{"theme"}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"unread": "3"}
	c := nodes[1].dial(token(t, user, nil, time.Hour), "")
	if got := c.handshake(user); !maps.Equal(got, want) {
		t.Fatalf("state on connect %v, want %v", got, want)
	}
	for _, tn := range nodes {
		got, err := tn.protoClient().GetState(ctx, &notifypb.GetStateRequest{UserId: user})
		if err != nil || !maps.Equal(got.State, want) {
			t.Fatalf("GetState on %s: %v %v", tn.cfg.NodeName, got, err)
		}
	}
	if n := nodes[0].metric("notify_mesh_state_calls_total", "result", "ok"); n < 2 {
		t.Errorf("node-0 forwarded %v state calls", n)
	}
}

// TestMeshLeaveHandsStateOver: a node stopped gracefully gives its users'
// state to their new owners before it stops.
func TestMeshLeaveHandsStateOver(t *testing.T) {
	nodes := startMeshCluster(t, 3, nil)
	ctx := withKey(t, testAPIKey)
	users := []string{userOwnedBy(t, nodes, "node-2", 0), userOwnedBy(t, nodes, "node-2", 1), userOwnedBy(t, nodes, "node-2", 2)}
	for i, u := range users {
		if _, err := nodes[0].protoClient().SetState(ctx, &notifypb.SetStateRequest{UserId: u, Fields: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[2].Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, nodes[:2], 2)
	if got := nodes[2].metric("notify_mesh_state_handovers_total", "result", "sent"); got != float64(len(users)) {
		t.Errorf("node-2 handed over %v users, want %d", got, len(users))
	}
	for i, u := range users {
		got, err := nodes[0].protoClient().GetState(ctx, &notifypb.GetStateRequest{UserId: u})
		if err != nil || got.State["n"] != fmt.Sprint(i) {
			t.Fatalf("%s after node-2 left: %v %v", u, got, err)
		}
	}
	c := nodes[1].dial(token(t, users[0], nil, time.Hour), "")
	if got := c.handshake(users[0]); got["n"] != "0" {
		t.Fatalf("state on connect after the leave: %v", got)
	}
}

// kill stops a node as a crash would look to the others: no leave, no
// drain, no hand-over; its sockets close.
func (tn *testNode) kill() {
	tn.t.Helper()
	tn.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tn.stopErr = tn.services.Stop(ctx)
	})
}

// TestMeshKilledMember: publishes for the users of a member that died are
// retried for the retry period, then dropped and counted; once gossip has
// dropped the member, the others are ready again and own its users.
func TestMeshKilledMember(t *testing.T) {
	nodes := startMeshCluster(t, 3, func(_ int, c *Config) { c.MeshRetry = 300 * time.Millisecond })
	user := userOwnedBy(t, nodes, "node-2", 0)
	nodes[2].kill()
	const n = 5
	for i := range n {
		nodes[0].publishTo([]string{user}, nil, fmt.Sprint(i))
	}
	eventually(t, "the publishes counted as dropped", func() bool {
		return nodes[0].metric("notify_mesh_dropped_total", "reason", "unreachable")+
			nodes[0].metric("notify_mesh_dropped_total", "reason", "left") == n
	})
	waitMembers(t, nodes[:2], 2)
	nodes[0].waitReady(200)
	c := nodes[1].dial(token(t, user, nil, time.Hour), "")
	c.handshake(user)
	nodes[0].publishTo([]string{user}, nil, "after")
	if got := c.readString(); got != "after" {
		t.Fatalf("got %q on the new owner", got)
	}
}

// TestMeshReadyzDownLink: a member whose links are refused (another
// cluster secret) makes /readyz fail after the grace, naming it.
func TestMeshReadyzDownLink(t *testing.T) {
	nodes := startCluster(t, nil, 2, func(i int, c *Config) {
		c.Broker = brokerCluster
		c.History.Size = 0
		c.MeshReadyGrace = 200 * time.Millisecond
		if i == 1 {
			c.ClusterSecret = "another-cluster-secret"
		}
	})
	eventually(t, "node-0 not ready", func() bool {
		code, _ := nodes[0].get("/readyz")
		return code == 503
	})
	_, body := nodes[0].get("/readyz")
	if !strings.Contains(body, "mesh links down: node-1") || !strings.Contains(body, "401") {
		t.Fatalf("/readyz: %s", body)
	}
}

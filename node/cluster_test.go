package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/node/internal/placement"
	"github.com/notify-dev/notify/ring"
	"github.com/notify-dev/notify/transport"
)

// startCluster starts n nodes on one Redis, each joining the first.
func startCluster(t *testing.T, rs *redistest.Server, n int, mutate func(i int, c *Config)) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := 0; i < n; i++ {
		nodes = append(nodes, startClusterNode(t, rs, fmt.Sprintf("node-%d", i), nodes, func(c *Config) {
			if mutate != nil {
				mutate(i, c)
			}
		}))
	}
	waitMembers(t, nodes, n)
	return nodes
}

func startClusterNode(t *testing.T, rs *redistest.Server, name string, seeds []*testNode, mutate func(*Config)) *testNode {
	t.Helper()
	return startNode(t, rs, func(c *Config) {
		c.NodeName = name
		c.APIKey = testAPIKey
		c.RebalanceRate = 1000
		c.RejoinEvery = 500 * time.Millisecond
		c.ClusterSecret = testClusterSecret
		for _, s := range seeds {
			c.Join = append(c.Join, s.gossipAddr())
		}
		if mutate != nil {
			mutate(c)
		}
	})
}

func (tn *testNode) gossipAddr() string { return tn.cluster.GossipAddr() }

// waitMembers waits until every node's ring has want members.
func waitMembers(t *testing.T, nodes []*testNode, want int) {
	t.Helper()
	for _, n := range nodes {
		eventually(t, fmt.Sprintf("%s sees %d members", n.cfg.NodeName, want), func() bool {
			return len(n.place.Ring().Members()) == want
		})
	}
}

func (tn *testNode) clusterStatus(user string) placement.Status {
	tn.t.Helper()
	_, body := tn.get("/cluster?user=" + user)
	var st placement.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		tn.t.Fatalf("/cluster: %v: %s", err, body)
	}
	return st
}

// userOwnedBy finds a user id owned by node, per the ring of nodes[0].
func userOwnedBy(t *testing.T, nodes []*testNode, node string, skip int) string {
	t.Helper()
	r := nodes[0].place.Ring()
	for i := 0; i < 100000; i++ {
		u := fmt.Sprint("u-", i)
		if r.Locate(u) == node {
			if skip == 0 {
				return u
			}
			skip--
		}
	}
	t.Fatal("no user found")
	return ""
}

func byName(nodes []*testNode, name string) *testNode {
	for _, n := range nodes {
		if n.cfg.NodeName == name {
			return n
		}
	}
	return nil
}

func TestRelayToOwner(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 3, nil)
	for _, n := range nodes {
		n.waitReady(200)
	}
	owner := nodes[1]
	user := userOwnedBy(t, nodes, owner.cfg.NodeName, 0)
	if st := nodes[0].clusterStatus(user); st.User.Owner != owner.cfg.NodeName || len(st.Members) != 3 || len(st.Ring.Members) != 3 {
		t.Fatalf("/cluster says %+v", st)
	}
	// The client lands on node-0, which relays it to the owner.
	c := nodes[0].dial(token(t, user, nil, time.Hour), "")
	if got := c.resp.Header.Get("X-Notify-Node"); got != owner.cfg.NodeName {
		t.Fatalf("served by %q, want the owner %s", got, owner.cfg.NodeName)
	}
	c.handshake(user)
	eventually(t, "relay counted", func() bool { return nodes[0].metric("notify_forwarded_connections") == 1 })
	if got := owner.metric("notify_connections", "transport", "websocket"); got != 1 {
		t.Fatalf("the owner holds %v connections", got)
	}
	if got := nodes[0].metric("notify_connections", "transport", "websocket"); got != 0 {
		t.Fatalf("the relaying node holds %v connections", got)
	}
	for i := 0; i < 50; i++ {
		nodes[2].redis.Publish(t.Context(), "notify:"+user, fmt.Sprint(i))
	}
	for i := 0; i < 50; i++ {
		if s := c.readString(); s != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d", s, i)
		}
	}
	// Presence and Disconnect work cluster-wide.
	pr, err := nodes[2].protoClient().Presence(withKey(t, testAPIKey), &notifypb.PresenceRequest{UserIds: []string{user}})
	if err != nil || pr.Connections[user] != 1 {
		t.Fatalf("presence %v %v", pr, err)
	}
	if _, err := nodes[2].protoClient().Disconnect(withKey(t, testAPIKey), &notifypb.DisconnectRequest{UserId: user}); err != nil {
		t.Fatal(err)
	}
	c.expectClose(transport.CloseDisconnected)
	eventually(t, "relay closed", func() bool { return nodes[0].metric("notify_forwarded_connections") == 0 })

	// Client frames reach the owner too: a client's close arrives there.
	c2 := nodes[0].dial(token(t, user, nil, time.Hour), "")
	c2.handshake(user)
	if err := c2.conn.Close(4321, "bye"); err != nil {
		t.Fatalf("close through the relay: %v", err)
	}
	eventually(t, "the owner saw the client's close", func() bool {
		return owner.metric("notify_disconnects_total", "code", "other") == 1
	})
}

func TestRelayOwnerUnreachableServesLocally(t *testing.T) {
	rs := redistest.Start(t)
	// node-1 tells the others it takes relays at a closed port.
	nodes := startCluster(t, rs, 2, func(i int, c *Config) {
		if i == 1 {
			c.AdvertiseRelayPort = 1
		}
	})
	user := userOwnedBy(t, nodes, "node-1", 0)
	c := nodes[0].dial(token(t, user, nil, time.Hour), "")
	if got := c.resp.Header.Get("X-Notify-Node"); got != "node-0" {
		t.Fatalf("served by %q, want node-0 (locally)", got)
	}
	c.handshake(user)
	if got := nodes[0].metric("notify_forward_errors_total"); got != 1 {
		t.Fatalf("forward errors %v", got)
	}
	// Presence asks the owner alone (issue 12), plus the asking node's own
	// count: a client served off its owner is counted where it is.
	for i, want := range []uint32{1, 0} {
		pr, err := nodes[i].protoClient().Presence(withKey(t, testAPIKey), &notifypb.PresenceRequest{UserIds: []string{user}})
		if err != nil || pr.Connections[user] != want {
			t.Fatalf("presence asked of node-%d: %v %v, want %d", i, pr, err, want)
		}
	}
}

// TestRebalanceOnJoin: when a member joins, only the connections of users
// it now owns are closed with 1012 "moved".
func TestRebalanceOnJoin(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 2, nil)
	const users = 60
	clients := map[string]*wsClient{}
	for i := 0; i < users; i++ {
		u := fmt.Sprint("r-", i)
		owner := byName(nodes, nodes[0].place.Ring().Locate(u))
		c := owner.dial(token(t, u, nil, time.Hour), "")
		c.handshake(u)
		clients[u] = c
	}
	before := nodes[0].place.Ring()
	third := startClusterNode(t, rs, "node-2", nodes, nil)
	all := append(nodes, third)
	waitMembers(t, all, 3)
	after := nodes[0].place.Ring()
	moved := 0
	for u, c := range clients {
		if before.Locate(u) == after.Locate(u) {
			continue
		}
		moved++
		if reason := c.expectClose(transport.CloseServiceRestart); reason != "moved" {
			t.Fatalf("%s: reason %q", u, reason)
		}
	}
	if moved == 0 || moved == users {
		t.Fatalf("%d of %d users moved", moved, users)
	}
	for u, c := range clients {
		if before.Locate(u) == after.Locate(u) {
			// Not closed: the next frame is this message, not a close.
			nodes[0].redis.Publish(t.Context(), "notify:"+u, "still here")
			if s := c.readString(); s != "still here" {
				t.Fatalf("%s: got %q", u, s)
			}
		}
	}
	closes := nodes[0].metric("notify_rebalance_closes_total") + nodes[1].metric("notify_rebalance_closes_total")
	if int(closes) != moved {
		t.Fatalf("rebalance closes %v, moved %d", closes, moved)
	}
}

// TestDrainClosesRelayedClientsThroughOwners: a stopping node's relayed
// clients get 1012 "shutdown" from their owners, through the relay.
func TestDrainClosesRelayedClientsThroughOwners(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 2, func(i int, c *Config) { c.DrainTimeout = 300 * time.Millisecond })
	user := userOwnedBy(t, nodes, "node-1", 0)
	c := nodes[0].dial(token(t, user, nil, time.Hour), "")
	if c.resp.Header.Get("X-Notify-Node") != "node-1" {
		t.Fatal("not relayed")
	}
	c.handshake(user)
	done := make(chan error, 1)
	go func() { done <- nodes[0].Shutdown(context.Background()) }()
	if reason := c.expectClose(transport.CloseServiceRestart); reason != "shutdown" {
		t.Fatalf("reason %q", reason)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitMembers(t, nodes[1:], 1)
}

func TestOtherRingSettingsKeptOffTheRing(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 1, nil)
	odd := startClusterNode(t, rs, "odd", nodes, func(c *Config) {
		c.Ring = ring.Config{Partitions: 1021, ReplicationFactor: 40, Load: 1.25}
	})
	// The view that lists odd is the one that decided the ring.
	eventually(t, "node-0's placement saw odd", func() bool {
		return slices.ContainsFunc(nodes[0].place.Status("").Members, func(m placement.Member) bool { return m.Name == "odd" })
	})
	if got := nodes[0].place.Ring().Members(); !slices.Equal(got, []string{"node-0"}) {
		t.Fatalf("ring %v: a member with other ring settings was placed", got)
	}
	st := nodes[0].clusterStatus("")
	for _, m := range st.Members {
		if m.Name == "odd" && (m.OnRing || m.RingHash == st.Ring.Hash) {
			t.Fatalf("/cluster shows %+v", m)
		}
	}
	_ = odd
}

// TestPeerCallsUseTheClusterSecret: nodes ask each other for presence with
// requests signed by the cluster secret (or one derived from the gossip
// key), never with the client API key; a node with another secret, or a
// cluster with neither, is refused, and Presence then fails rather than
// count half the cluster.
func TestPeerCallsUseTheClusterSecret(t *testing.T) {
	const gossipKey = "MDEyMzQ1Njc4OWFiY2RlZg==" // 16 bytes
	tests := []struct {
		name    string
		secrets [2]string // NOTIFY_CLUSTER_SECRET per node
		keys    [2]string // NOTIFY_GOSSIP_KEY per node
		ok      bool
	}{
		{"same cluster secret", [2]string{testClusterSecret, testClusterSecret}, [2]string{}, true},
		{"derived from the gossip key", [2]string{}, [2]string{gossipKey, gossipKey}, true},
		{"other cluster secret", [2]string{testClusterSecret, "another-cluster-secret"}, [2]string{}, false},
		{"neither", [2]string{}, [2]string{}, false},
	}
	rs := redistest.Start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startCluster(t, rs, 2, func(i int, c *Config) {
				c.ClusterSecret, c.GossipKey = tt.secrets[i], tt.keys[i]
			})
			user := userOwnedBy(t, nodes, "node-1", 0)
			c := nodes[1].dial(token(t, user, nil, time.Hour), "")
			c.handshake(user)
			pr, err := nodes[0].protoClient().Presence(withKey(t, testAPIKey), &notifypb.PresenceRequest{UserIds: []string{user}})
			switch {
			case tt.ok && (err != nil || pr.Connections[user] != 1):
				t.Fatalf("presence %v %v, want 1 connection", pr, err)
			case !tt.ok && err == nil:
				t.Fatalf("presence %v: a peer without the cluster secret was answered", pr)
			}
		})
	}
}

// TestPresenceEndpointRefusesTheAPIKey: the client API key is no credential
// between nodes.
func TestPresenceEndpointRefusesTheAPIKey(t *testing.T) {
	tn := startAPINode(t, nil, func(c *Config) { c.ClusterSecret = testClusterSecret })
	req, _ := http.NewRequest(http.MethodPost, tn.url("/cluster/presence"), strings.NewReader(`{"user_ids":["a"]}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("presence with the API key: %d, want 401", resp.StatusCode)
	}
}

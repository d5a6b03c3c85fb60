package node

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/node/internal/placement"
)

// The Sec-WebSocket-Keys of two handshakes.
const (
	handshakeKey      = "dGhlIHNhbXBsZSBub25jZQ=="
	otherHandshakeKey = "AQIDBAUGBwgJCgsMDQ4PEA=="
)

// relayHeader is what node sends when it relays user's handshake with key
// to /notify/ws, signed with secret.
func relayHeader(node, user, key, secret string) http.Header {
	sig := cluster.NewPeerAuth([]byte(secret)).SignRelay(cluster.Relay{
		Node: node, User: user, Method: http.MethodGet, Target: "/notify/ws", Key: key,
	})
	return http.Header{placement.ForwardedByHeader: {node}, cluster.RelayAuthHeader: {sig}}
}

// relayAuthCase is a handshake for a user node-1 owns, sent to nodes[at]
// with header, and where it must end up: served by server, attributed to
// via (unless skipVia), with unverified relay headers counted.
type relayAuthCase struct {
	name       string
	at         int
	key        string                        // the handshake's Sec-WebSocket-Key; "" = handshakeKey
	header     func(user string) http.Header // nil = a plain client
	server     string
	via        string
	skipVia    bool // the client does not stay long enough to look
	unverified float64
}

func relayAuthCases() []relayAuthCase {
	const other = "another-cluster-secret"
	signed := func(node, key, secret string) func(string) http.Header {
		return func(user string) http.Header { return relayHeader(node, user, key, secret) }
	}
	claim := func(h http.Header) func(string) http.Header { return func(string) http.Header { return h } }
	random := http.Header{placement.ForwardedByHeader: {"node-0"},
		cluster.RelayAuthHeader: {"v1:" + strconv.FormatInt(time.Now().Unix(), 10) + ":" + strings.Repeat("ab", 32)}}
	return []relayAuthCase{
		{name: "client at the non-owner is relayed", at: 0, server: "node-1", via: "node-0"},
		{name: "valid relay at the owner is attributed", at: 1, header: signed("node-0", handshakeKey, testClusterSecret), server: "node-1", via: "node-0"},
		// The relaying node's ring was stale: served where it lands, never relayed again.
		{name: "valid relay at a non-owner is served there", at: 0, header: signed("node-1", handshakeKey, testClusterSecret), server: "node-0", skipVia: true},

		{name: "unsigned claim at the non-owner is relayed", at: 0, header: claim(http.Header{placement.ForwardedByHeader: {"node-9"}}), server: "node-1", via: "node-0", unverified: 1},
		{name: "random signature at the non-owner is relayed", at: 0, header: claim(random), server: "node-1", via: "node-0", unverified: 1},
		{name: "wrong secret at the non-owner is relayed", at: 0, header: signed("node-1", handshakeKey, other), server: "node-1", via: "node-0", unverified: 1},
		{name: "replayed on another handshake at the non-owner is relayed", at: 0, key: otherHandshakeKey, header: signed("node-1", handshakeKey, testClusterSecret), server: "node-1", via: "node-0", unverified: 1},

		{name: "unsigned claim at the owner is not attributed", at: 1, header: claim(http.Header{placement.ForwardedByHeader: {"node-0"}}), server: "node-1", unverified: 1},
		{name: "random signature at the owner is not attributed", at: 1, header: claim(random), server: "node-1", unverified: 1},
		{name: "wrong secret at the owner is not attributed", at: 1, header: signed("node-0", handshakeKey, other), server: "node-1", unverified: 1},
		{name: "replayed on another handshake at the owner is not attributed", at: 1, key: otherHandshakeKey, header: signed("node-0", handshakeKey, testClusterSecret), server: "node-1", unverified: 1},
		{name: "replayed for another user at the owner is not attributed", at: 1, header: func(string) http.Header {
			return relayHeader("node-0", "someone-else", handshakeKey, testClusterSecret)
		}, server: "node-1", unverified: 1},
		{name: "another node's name on a signature at the owner is not attributed", at: 1, header: func(user string) http.Header {
			h := relayHeader("node-0", user, handshakeKey, testClusterSecret)
			h.Set(placement.ForwardedByHeader, "node-9")
			return h
		}, server: "node-1", unverified: 1},
	}
}

// TestForwardedByNeedsTheClusterSecret: X-Notify-Forwarded-By counts only
// with a fresh signature by the cluster secret of this handshake; a client
// that sends it is relayed to the owner like any other, and the owner does
// not attribute it to the node it names.
func TestForwardedByNeedsTheClusterSecret(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 2, nil)
	for i, tt := range relayAuthCases() {
		t.Run(tt.name, func(t *testing.T) {
			user := userOwnedBy(t, nodes, "node-1", i)
			var hdr http.Header
			if tt.header != nil {
				hdr = tt.header(user)
			}
			before := nodes[0].metric("notify_forwarded_unverified_total") + nodes[1].metric("notify_forwarded_unverified_total")
			resp := rawHandshake(t, nodes[tt.at], token(t, user, nil, time.Hour), tt.key, hdr)
			if got := resp.Header.Get("X-Notify-Node"); got != tt.server {
				t.Fatalf("served by %q, want %s", got, tt.server)
			}
			if !tt.skipVia {
				if got := clientVia(t, byName(nodes, tt.server), user); got != tt.via {
					t.Errorf("attributed to %q, want %q", got, tt.via)
				}
			}
			after := nodes[0].metric("notify_forwarded_unverified_total") + nodes[1].metric("notify_forwarded_unverified_total")
			if got := after - before; got != tt.unverified {
				t.Errorf("notify_forwarded_unverified_total went up by %v, want %v", got, tt.unverified)
			}
		})
	}
}

// TestRelayWithoutASharedSecret: nodes that cannot verify each other's
// relays (no secret, or different ones) still relay clients to the owner,
// which serves them as direct clients.
func TestRelayWithoutASharedSecret(t *testing.T) {
	tests := []struct {
		name    string
		secrets [2]string
	}{
		{"neither has a secret", [2]string{}},
		{"other secrets", [2]string{testClusterSecret, "another-cluster-secret"}},
	}
	rs := redistest.Start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startCluster(t, rs, 2, func(i int, c *Config) { c.ClusterSecret = tt.secrets[i] })
			user := userOwnedBy(t, nodes, "node-1", 0)
			c := nodes[0].dial(token(t, user, nil, time.Hour), "")
			if got := c.resp.Header.Get("X-Notify-Node"); got != "node-1" {
				t.Fatalf("served by %q, want the owner node-1", got)
			}
			c.handshake(user)
			if got := clientVia(t, nodes[1], user); got != "" {
				t.Errorf("attributed to %q without a signature", got)
			}
			if got := nodes[1].metric("notify_forwarded_unverified_total"); got != 1 {
				t.Errorf("owner counted %v unverified relays, want 1", got)
			}
		})
	}
}

// TestLongPollRelayIsSigned: long-poll requests relayed to the owner (the
// open, the polls, the posts with their bodies) carry signatures the owner
// verifies, so the session is served there and attributed to the relay.
func TestLongPollRelayIsSigned(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 2, func(_ int, c *Config) { c.LongPollHold = 300 * time.Millisecond })
	user := userOwnedBy(t, nodes, "node-1", 0)
	l := nodes[0].longPoll(user)
	l.open()
	if r := l.post(`["1","1","user:` + user + `","phx_join",{}]`); r["status"] != float64(200) {
		t.Fatalf("post: %v", r)
	}
	if got := l.poll(1); !strings.Contains(got[0], `"phx_reply"`) {
		t.Fatalf("replies %q", got)
	}
	if got := nodes[1].metric("notify_connections", "transport", "longpoll"); got != 1 {
		t.Fatalf("the owner holds %v long-poll sessions, want 1", got)
	}
	if got := clientVia(t, nodes[1], user); got != "node-0" {
		t.Errorf("attributed to %q, want node-0", got)
	}
	for _, n := range nodes {
		if got := n.metric("notify_forwarded_unverified_total"); got != 0 {
			t.Errorf("%s: %v relayed requests did not verify", n.cfg.NodeName, got)
		}
	}
}

// rawHandshake sends a WebSocket handshake with key (""= handshakeKey) and
// header to tn's /notify/ws and returns its 101 response; the connection is
// closed when the test ends.
func rawHandshake(t *testing.T, tn *testNode, tok, key string, header http.Header) *http.Response {
	t.Helper()
	req := upgradeRequest(t, tn.url("/notify/ws"))
	for k, v := range header {
		req.Header[k] = v
	}
	if key != "" {
		req.Header.Set("Sec-WebSocket-Key", key)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %s", resp.Status)
	}
	return resp
}

// clientVia waits for user's client on tn and returns the node it is
// attributed to.
func clientVia(t *testing.T, tn *testNode, user string) string {
	t.Helper()
	via := ""
	eventually(t, user+" connected to "+tn.cfg.NodeName, func() bool {
		for _, c := range tn.hub.Clients() {
			if c.User == user {
				via = c.Via
				return true
			}
		}
		return false
	})
	return via
}

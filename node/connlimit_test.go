package node

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/node/internal/admission"
)

func TestDefaultMaxConnections(t *testing.T) {
	tests := []struct {
		soft uint64
		want int
	}{
		{1 << 20, 1<<20 - 1024}, // a container's usual limit: the reserve's cap
		{20000, 19000},          // 5%
		{4096, 4096 - 204},
		{1024, 1024 - 64}, // the reserve's floor
		{128, 64},         // too small for a reserve: half
		{16, 8},
		{0, 0},
		{1 << 63, 1<<31 - 1 - 1024}, // RLIM_INFINITY
	}
	for _, tt := range tests {
		if got := defaultMaxConnections(tt.soft); got != tt.want {
			t.Errorf("defaultMaxConnections(%d) = %d, want %d", tt.soft, got, tt.want)
		}
	}
}

func TestMaxConnectionsValidated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxConnections = -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "NOTIFY_MAX_CONNECTIONS") {
		t.Fatalf("Validate: %v, want NOTIFY_MAX_CONNECTIONS named", err)
	}
	cfg.MaxConnections = 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMaxConnectionsDefaultFromFileLimit(t *testing.T) {
	soft, ok := fileLimit()
	if !ok {
		t.Skip("no open files limit here")
	}
	tn := startNode(t, nil, nil)
	if got, want := tn.metric("notify_connections_limit"), float64(defaultMaxConnections(soft)); got != want {
		t.Fatalf("notify_connections_limit %v, want %v", got, want)
	}
}

// TestConnectionLimit: at NOTIFY_MAX_CONNECTIONS every endpoint refuses a
// new client with 503, Retry-After and the JSON error, counted; a client
// that leaves makes room.
func TestConnectionLimit(t *testing.T) {
	tn := startPhoenixNode(t, nil, func(c *Config) { c.MaxConnections = 2 })
	a := tn.dial(token(t, "a", nil, time.Hour), "")
	a.handshake("a")
	l := tn.longPoll("b") // a long-poll session counts too
	l.open()
	tok := url.QueryEscape(token(t, "c", nil, time.Hour))
	endpoints := []struct {
		name    string
		path    string
		upgrade bool
	}{
		{"notify ws", "/notify/ws?authorization=" + tok, true},
		{"phoenix ws", "/pubsub/websocket?vsn=2.0.0&token=" + tok, true},
		{"sse", "/notify/sse?authorization=" + tok, false},
		{"long-poll open", "/pubsub/longpoll?vsn=2.0.0&token=" + tok, false},
	}
	for i, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			expectLimitRefusal(t, tn, ep.path, ep.upgrade)
			if got := tn.metric("notify_connections_rejected_total", "reason", admission.RejectLimit); got != float64(i+1) {
				t.Fatalf("rejected{reason=limit} %v, want %d", got, i+1)
			}
		})
	}
	a.conn.CloseNow()
	eventually(t, "the client's close seen", func() bool { return tn.hub.Open() == 1 })
	tn.dial(token(t, "c", nil, time.Hour), "").handshake("c")
}

// expectLimitRefusal checks that path answers the refusal at the limit.
func expectLimitRefusal(t *testing.T, tn *testNode, path string, upgrade bool) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, tn.url(path), nil)
	if upgrade {
		req = upgradeRequest(t, tn.url(path))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.Error.Message != admission.LimitMessage {
		t.Fatalf("%d %s, want 503 with the JSON error %q", resp.StatusCode, body, admission.LimitMessage)
	}
	s, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || s < 2 || s > 6 {
		t.Fatalf("Retry-After %q, want 2 to 6 seconds", resp.Header.Get("Retry-After"))
	}
}

// TestConnectionLimitRelayed: a relayed client counts on both nodes, each
// against its own limit: two on the node it lands on (its socket and the
// relay's), one on the owner. An owner at its limit refuses the relay, and
// the landing node serves the client itself.
func TestConnectionLimitRelayed(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startCluster(t, rs, 2, func(_ int, c *Config) { c.MaxConnections = 2 })
	for _, n := range nodes {
		n.waitReady(200)
	}
	owned := func(skip int) string { return userOwnedBy(t, nodes, "node-1", skip) }
	// Relayed through node-0: both of its two there, one of node-1's.
	u0 := owned(0)
	c0 := nodes[0].dial(token(t, u0, nil, time.Hour), "")
	c0.handshake(u0)
	if got := c0.resp.Header.Get("X-Notify-Node"); got != "node-1" {
		t.Fatalf("served by %q, want the owner node-1", got)
	}
	if got := nodes[0].accept.Load(); got != 2 {
		t.Fatalf("node-0 holds %d, want 2 for the relay", got)
	}
	expectLimitRefusal(t, nodes[0], "/notify/ws?authorization="+token(t, owned(1), nil, time.Hour), true)
	c0.conn.CloseNow()
	eventually(t, "the relay closed", func() bool { return nodes[0].accept.Load() == 0 && nodes[1].hub.Open() == 0 })
	// node-1 full of its own: a client relayed to it is refused there, and
	// node-0, which has room, serves it.
	for i := 2; i < 4; i++ {
		nodes[1].dial(token(t, owned(i), nil, time.Hour), "").handshake(owned(i))
	}
	u4 := owned(4)
	c4 := nodes[0].dial(token(t, u4, nil, time.Hour), "")
	c4.handshake(u4)
	if got := c4.resp.Header.Get("X-Notify-Node"); got != "node-0" {
		t.Fatalf("served by %q, want node-0 (the owner is full)", got)
	}
	if got := nodes[1].metric("notify_connections_rejected_total", "reason", admission.RejectLimit); got != 1 {
		t.Fatalf("the owner refused %v relays, want 1", got)
	}
}

package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

const (
	testSecret        = "node-test-secret"
	testClusterSecret = "node-test-cluster-secret"
)

// testNode is a started node and what tests need to drive it.
type testNode struct {
	*Node
	t     *testing.T
	redis *redis.Client // nil on the memory broker
}

// startNode starts a node on a free port with the memory broker, or on
// Redis when rs is not nil.
func startNode(t *testing.T, rs *redistest.Server, mutate func(*Config)) *testNode {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Port = "127.0.0.1:0"
	cfg.PprofPort = "off"
	cfg.GRPCPort = "off"
	cfg.GossipAddr = "127.0.0.1:0"
	cfg.GossipLocal = true
	cfg.Auth.Secret = testSecret
	cfg.NodeName = "test-node"
	cfg.DrainTimeout = 200 * time.Millisecond
	cfg.CloseTimeout = 2 * time.Second
	cfg.ProbeInterval = 100 * time.Millisecond
	if rs != nil {
		cfg.Redis.Addr = rs.Addr
	}
	if mutate != nil {
		mutate(&cfg)
	}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	tn := &testNode{Node: n, t: t}
	if rs != nil {
		tn.redis = rs.Client(t)
	}
	return tn
}

func (tn *testNode) url(path string) string { return "http://" + tn.Addr() + path }

func (tn *testNode) wsURL(query string) string {
	u := "ws://" + tn.Addr() + "/notify/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// waitReady polls /readyz until it answers want.
func (tn *testNode) waitReady(want int) {
	tn.t.Helper()
	await.True(tn.t, fmt.Sprintf("/readyz answering %d", want), func() bool {
		resp, err := http.Get(tn.url("/readyz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == want
	})
}

// publish sends payload on channel through Redis or the memory broker.
func (tn *testNode) publish(channel, payload string) {
	tn.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if tn.redis != nil {
		err = tn.redis.Publish(ctx, channel, payload).Err()
	} else {
		err = tn.broker.Publish(ctx, channel, []byte(payload))
	}
	if err != nil {
		tn.t.Fatalf("publish: %v", err)
	}
}

func token(t testing.TB, user string, topics []string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Sign(auth.Config{Secret: testSecret}, user, topics, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wsClient is a real WebSocket client (coder/websocket, a strict one).
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
	resp *http.Response
}

func (tn *testNode) dial(tok, query string) *wsClient {
	tn.t.Helper()
	c, err := tn.tryDial(tok, query, nil)
	if err != nil {
		tn.t.Fatal(err)
	}
	return c
}

func (tn *testNode) tryDial(tok, query string, hdr http.Header) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if hdr == nil {
		hdr = http.Header{}
	}
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	conn, resp, err := websocket.Dial(ctx, tn.wsURL(query), &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	c := &wsClient{t: tn.t, conn: conn, resp: resp}
	tn.t.Cleanup(func() { conn.CloseNow() })
	return c, nil
}

// read returns the next message as a string.
func (c *wsClient) read() (websocket.MessageType, string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return typ, string(b)
}

func (c *wsClient) readString() string {
	c.t.Helper()
	_, s := c.read()
	return s
}

// handshake reads the connect and state frames and returns the state.
func (c *wsClient) handshake(user string) map[string]string {
	c.t.Helper()
	var connect struct {
		Kind   string `json:"kind"`
		UserID string `json:"userID"`
	}
	if err := json.Unmarshal([]byte(c.readString()), &connect); err != nil || connect.Kind != "connect" || connect.UserID != user {
		c.t.Fatalf("frame 1: %+v %v, want connect for %q", connect, err, user)
	}
	var state struct {
		Kind  string            `json:"kind"`
		State map[string]string `json:"state"`
	}
	s := c.readString()
	if err := json.Unmarshal([]byte(s), &state); err != nil || state.Kind != "state" || state.State == nil {
		c.t.Fatalf("frame 2: %s %v, want state", s, err)
	}
	return state.State
}

// expectClose reads until the connection ends and checks the close code.
func (c *wsClient) expectClose(code int) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		_, _, err := c.conn.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("connection ended with %v, want close %d", err, code)
		}
		if int(ce.Code) != code {
			c.t.Fatalf("close %d %q, want %d", ce.Code, ce.Reason, code)
		}
		return ce.Reason
	}
}

// expectSilence checks that nothing arrives for d, and that the connection
// is still open then. coder/websocket closes the connection when a read's
// context ends, so this is the last use of c.
func (c *wsClient) expectSilence(d time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	switch {
	case err == nil:
		c.t.Fatalf("unexpected message %q", b)
	case !errors.Is(err, context.DeadlineExceeded):
		c.t.Fatalf("connection ended (%v) where silence was expected", err)
	}
}

// get fetches path and returns the status and body.
func (tn *testNode) get(path string) (int, string) {
	tn.t.Helper()
	resp, err := http.Get(tn.url(path))
	if err != nil {
		tn.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads the value of one series from the node's registry.
func (tn *testNode) metric(name string, labels ...string) float64 {
	tn.t.Helper()
	mfs, err := tn.reg.Gather()
	if err != nil {
		tn.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	tn.t.Fatalf("no series %s%v", name, labels)
	return 0
}

// eventually polls cond until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.True(t, what, cond)
}

// sseEvent is one event of an event stream.
type sseEvent struct {
	event, data, id string
}

// sseReader reads events off an event stream.
type sseReader struct{ br *bufio.Reader }

func newSSEReader(r io.Reader) *sseReader { return &sseReader{bufio.NewReader(r)} }

// next returns the next event (comments and retry lines skipped).
func (r *sseReader) next(t *testing.T) sseEvent {
	t.Helper()
	var ev sseEvent
	var data []string
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev.event != "" || len(data) > 0 {
				ev.data = strings.Join(data, "\n")
				return ev
			}
		case strings.HasPrefix(line, "event: "):
			ev.event += line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:])
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		}
	}
}

package node

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/transport"
)

// handTokenHS256 signs claims with key as HS256 by hand, so tests can make
// tokens no well-behaved library would.
func handToken(header, claims string, key []byte) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	if key == nil {
		return signing + "."
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func upgradeRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	return req
}

func TestHandshakeRefusals(t *testing.T) {
	plain := startNode(t, nil, func(c *Config) { c.AllowedOrigins = []string{"https://app.example.com"} })
	rsaOnly := startNode(t, nil, func(c *Config) {
		c.Auth.Secret = ""
		c.Auth.PublicKeyFiles = []string{"../auth/testdata/rsa_public.pem"}
	})
	withAud := startNode(t, nil, func(c *Config) { c.Auth.Audience = "notify" })

	for _, tt := range handshakeRefusalCases(t, plain, rsaOnly, withAud) {
		t.Run(tt.name, func(t *testing.T) { checkHandshakeRefusal(t, tt) })
	}
	if got := plain.metric("notify_connections_rejected_total", "reason", "unauthorized"); got < 7 {
		t.Fatalf("rejected{unauthorized} = %v", got)
	}
	// The allowlisted origin and clients without Origin get in.
	c, err := plain.tryDial(token(t, "u1", nil, time.Hour), "", http.Header{"Origin": {"https://app.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	c.handshake("u1")
}

// handshakeRefusal is a handshake to /notify/ws and the status refusing it.
type handshakeRefusal struct {
	name   string
	node   *testNode
	token  string
	query  string
	header map[string]string
	plain  bool // no upgrade headers
	status int
}

// handshakeRefusalCases are bad tokens for plain, for rsaOnly (public keys,
// no secret) and for withAud (an audience), then topics, Origin and
// requests that are not upgrades.
func handshakeRefusalCases(t *testing.T, plain, rsaOnly, withAud *testNode) []handshakeRefusal {
	t.Helper()
	now := time.Now().Unix()
	rsaPEM, err := os.ReadFile("../auth/testdata/rsa_public.pem")
	if err != nil {
		t.Fatal(err)
	}
	hs := `{"alg":"HS256","typ":"JWT"}`
	secret := []byte(testSecret)
	claims := func(extra string) string {
		return fmt.Sprintf(`{"user_id":"u1","exp":%d%s}`, now+3600, extra)
	}
	return []handshakeRefusal{
		{"no token", plain, "", "", nil, false, 401},
		{"garbage token", plain, "not.a.jwt", "", nil, false, 401},
		{"expired", plain, handToken(hs, fmt.Sprintf(`{"user_id":"u1","exp":%d}`, now-60), secret), "", nil, false, 401},
		{"not yet valid", plain, handToken(hs, fmt.Sprintf(`{"user_id":"u1","nbf":%d}`, now+3600), secret), "", nil, false, 401},
		{"alg none", plain, handToken(`{"alg":"none","typ":"JWT"}`, claims(""), nil), "", nil, false, 401},
		{"wrong secret", plain, handToken(hs, claims(""), []byte("other")), "", nil, false, 401},
		{"HS256 keyed with the RSA public key", rsaOnly, handToken(hs, claims(""), rsaPEM), "", nil, false, 401},
		{"wrong audience", withAud, handToken(hs, claims(`,"aud":"other"`), secret), "", nil, false, 401},
		{"empty user id", plain, handToken(hs, fmt.Sprintf(`{"user_id":"","exp":%d}`, now+3600), secret), "", nil, false, 401},
		{"missing user id", plain, handToken(hs, fmt.Sprintf(`{"sub":"u1","exp":%d}`, now+3600), secret), "", nil, false, 401},
		{"topic not granted", plain, token(t, "u1", []string{"a"}, time.Hour), "topic=a,b", nil, false, 403},
		{"foreign origin", plain, token(t, "u1", nil, time.Hour), "", map[string]string{"Origin": "https://evil.example.net"}, false, 403},
		{"plain GET", plain, "", "", nil, true, 400},
		{"plain GET with token", plain, token(t, "u1", nil, time.Hour), "", nil, true, 400},
	}
}

// checkHandshakeRefusal sends tt's handshake and wants its status with the
// JSON error, which does not echo the token.
func checkHandshakeRefusal(t *testing.T, tt handshakeRefusal) {
	t.Helper()
	url := tt.node.url("/notify/ws")
	if tt.query != "" {
		url += "?" + tt.query
	}
	var req *http.Request
	if tt.plain {
		req, _ = http.NewRequest(http.MethodGet, url, nil)
	} else {
		req = upgradeRequest(t, url)
	}
	if tt.token != "" {
		req.Header.Set("Authorization", "Bearer "+tt.token)
	}
	for k, v := range tt.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != tt.status {
		t.Fatalf("status %d %s, want %d", resp.StatusCode, body, tt.status)
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("body %q is not the JSON error", body)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	if tt.token != "" && len(tt.token) > 20 && strings.Contains(string(body), tt.token[len(tt.token)-20:]) {
		t.Fatal("the error echoes the token")
	}
}

func TestTokenSources(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) { c.Auth.SessionCookie = "session" })
	tok := token(t, "cookie-user", nil, time.Hour)
	// Cookie first, even with a bad header.
	c, err := tn.tryDial("", "", http.Header{"Cookie": {"session=" + tok}, "Authorization": {"Bearer junk"}})
	if err != nil {
		t.Fatal(err)
	}
	c.handshake("cookie-user")
	// Query parameter.
	c, err = tn.tryDial("", "authorization="+token(t, "query-user", nil, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake("query-user")
	// The older Notify's forms: a raw token in the header (any case), and
	// "Bearer " in the query parameter.
	c, err = tn.tryDial("", "", http.Header{"authorization": {token(t, "raw-header-user", nil, time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	c.handshake("raw-header-user")
	c, err = tn.tryDial("", "authorization="+url.QueryEscape("Bearer "+token(t, "bearer-query-user", nil, time.Hour)), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake("bearer-query-user")
}

func TestConnectStateThenMessages(t *testing.T) {
	rs := redistest.Start(t)
	tn := startNode(t, rs, nil)
	tn.waitReady(200)
	ctx := t.Context()
	if err := tn.redis.HSet(ctx, "notify:42:state", "unread", "3", "name", "Ada").Err(); err != nil {
		t.Fatal(err)
	}
	c := tn.dial(token(t, "42", nil, time.Hour), "")
	if got := c.resp.Header.Get("X-Notify-Node"); got != "test-node" {
		t.Fatalf("X-Notify-Node %q", got)
	}
	state := c.handshake("42")
	if state["unread"] != "3" || state["name"] != "Ada" || len(state) != 2 {
		t.Fatalf("state %v", state)
	}
	tn.publish("notify:42", `{"hello":"world"}`)
	tn.publish("notify:42", "\xff\xfe binary")
	tn.publish("notify:43", "not for 42")
	if typ, s := c.read(); typ != websocket.MessageText || s != `{"hello":"world"}` {
		t.Fatalf("got %v %q", typ, s)
	}
	if typ, s := c.read(); typ != websocket.MessageBinary || s != "\xff\xfe binary" {
		t.Fatalf("got %v %q", typ, s)
	}
	c.expectSilence(200 * time.Millisecond)

	// A user without state gets {}.
	empty := tn.dial(token(t, "no-state", nil, time.Hour), "")
	if s := empty.handshake("no-state"); len(s) != 0 {
		t.Fatalf("state %v, want empty", s)
	}
}

func TestNumericUserClaim(t *testing.T) {
	tn := startNode(t, nil, nil)
	hs := `{"alg":"HS256","typ":"JWT"}`
	tok := handToken(hs, fmt.Sprintf(`{"user_id":12345678901234567890,"exp":%d}`, time.Now().Unix()+60), []byte(testSecret))
	c := tn.dial(tok, "")
	c.handshake("12345678901234567890")
	tn.publish("notify:12345678901234567890", "n")
	if s := c.readString(); s != "n" {
		t.Fatalf("got %q", s)
	}
}

func TestTopics(t *testing.T) {
	tn := startNode(t, nil, nil)
	c := tn.dial(token(t, "u1", []string{"news", "sport"}, time.Hour), "topic=news%20sport")
	c.handshake("u1")
	other := tn.dial(token(t, "u2", []string{"news"}, time.Hour), "topic=news")
	other.handshake("u2")
	tn.publish("notify_topic:news", "n1")
	tn.publish("notify_topic:sport", "s1")
	tn.publish("notify_topic:weather", "w1")
	for _, want := range []string{"n1", "s1"} {
		if s := c.readString(); s != want {
			t.Fatalf("got %q, want %q", s, want)
		}
	}
	if s := other.readString(); s != "n1" {
		t.Fatalf("got %q", s)
	}
	other.expectSilence(100 * time.Millisecond)

	open := startNode(t, nil, func(c *Config) { c.OpenTopics = true })
	oc := open.dial(token(t, "u3", nil, time.Hour), "topic=anything")
	oc.handshake("u3")
	open.publish("notify_topic:anything", "x")
	if s := oc.readString(); s != "x" {
		t.Fatalf("got %q", s)
	}
}

func TestManyConnectionsPerUser(t *testing.T) {
	tn := startNode(t, nil, nil)
	var cs []*wsClient
	for i := 0; i < 5; i++ {
		c := tn.dial(token(t, "multi", nil, time.Hour), "")
		c.handshake("multi")
		cs = append(cs, c)
	}
	tn.publish("notify:multi", "all of you")
	for _, c := range cs {
		if s := c.readString(); s != "all of you" {
			t.Fatalf("got %q", s)
		}
	}
	if got := tn.metric("notify_messages_delivered_total"); got != 5 {
		t.Fatalf("delivered %v, want 5", got)
	}
	// One leaves; the others still receive.
	cs[2].conn.Close(websocket.StatusNormalClosure, "")
	eventually(t, "connection count 4", func() bool { return tn.metric("notify_connections", "transport", "websocket") == 4 })
	tn.publish("notify:multi", "four")
	for i, c := range cs {
		if i == 2 {
			continue
		}
		if s := c.readString(); s != "four" {
			t.Fatalf("got %q", s)
		}
	}
}

// TestOrderingUnderConcurrentPublishing connects clients while a publisher
// floods their user: each sees connect, state, then an unbroken run of
// sequence numbers.
func TestOrderingUnderConcurrentPublishing(t *testing.T) {
	rs := redistest.Start(t)
	tn := startNode(t, rs, func(c *Config) { c.SendQueueBytes = 8 << 20 })
	tn.waitReady(200)
	stop := make(chan struct{})
	var published sync.WaitGroup
	published.Add(1)
	go func() {
		defer published.Done()
		pub := rs.Client(t)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := pub.Publish(t.Context(), "notify:flood", fmt.Sprint(i)).Err(); err != nil {
				return
			}
		}
	}()
	const clients = 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 10 * time.Millisecond)
			c := tn.dial(token(t, "flood", nil, time.Hour), "")
			c.handshake("flood")
			prev := -1
			for j := 0; j < 300; j++ {
				var seq int
				if _, err := fmt.Sscan(c.readString(), &seq); err != nil {
					errs <- err
					return
				}
				if prev >= 0 && seq != prev+1 {
					errs <- fmt.Errorf("after %d came %d", prev, seq)
					return
				}
				prev = seq
			}
		}()
	}
	wg.Wait()
	close(stop)
	published.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestThousandConnections: 1,000 connections x 100 messages each, every
// message exactly once and in order per connection.
func TestThousandConnections(t *testing.T) {
	rs := redistest.Start(t)
	tn := startNode(t, rs, nil)
	tn.waitReady(200)
	const conns, msgs, users = 1000, 100, 500
	clients := make([]*wsClient, conns)
	for i := range clients {
		user := fmt.Sprintf("user-%d", i%users)
		clients[i] = tn.dial(token(t, user, nil, time.Hour), "")
		clients[i].handshake(user)
	}
	pub := rs.Client(t)
	go func() {
		pipe := pub.Pipeline()
		for m := 0; m < msgs; m++ {
			for u := 0; u < users; u++ {
				pipe.Publish(t.Context(), fmt.Sprintf("notify:user-%d", u), fmt.Sprintf("%d", m))
			}
			if _, err := pipe.Exec(t.Context()); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := 0; m < msgs; m++ {
				_, b, err := c.conn.Read(t.Context())
				if err != nil {
					errs <- fmt.Errorf("conn %d message %d: %v", i, m, err)
					return
				}
				if string(b) != fmt.Sprint(m) {
					errs <- fmt.Errorf("conn %d: got %q, want %d", i, b, m)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range clients[:10] {
		c.expectSilence(50 * time.Millisecond) // and nothing twice
	}
	if got := tn.metric("notify_messages_delivered_total"); got != conns*msgs {
		t.Fatalf("delivered %v, want %d", got, conns*msgs)
	}
}

func TestRedisDownAtStart(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop()
	tn := startNode(t, rs, nil)
	code, body := tn.get("/readyz")
	if code != 503 || !strings.Contains(body, "broker") {
		t.Fatalf("/readyz %d %s, want 503 naming the broker", code, body)
	}
	if code, _ := tn.get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	// No state store either: connections are refused with 503, not hung.
	req := upgradeRequest(t, tn.url("/notify/ws"))
	req.Header.Set("Authorization", "Bearer "+token(t, "u1", nil, time.Hour))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("handshake while Redis is down: %d", resp.StatusCode)
	}

	rs.Restart()
	tn.redis = rs.Client(t)
	tn.waitReady(200)
	c := tn.dial(token(t, "u1", nil, time.Hour), "")
	c.handshake("u1")
	tn.publish("notify:u1", "after start")
	if s := c.readString(); s != "after start" {
		t.Fatalf("got %q", s)
	}
}

func TestRedisRestartKeepsClients(t *testing.T) {
	rs := redistest.Start(t)
	tn := startNode(t, rs, nil)
	tn.waitReady(200)
	var cs []*wsClient
	for i := 0; i < 10; i++ {
		c := tn.dial(token(t, "u1", nil, time.Hour), "")
		c.handshake("u1")
		cs = append(cs, c)
	}
	rs.Stop()
	tn.waitReady(503)
	rs.Restart()
	tn.waitReady(200)
	tn.redis = rs.Client(t)
	tn.publish("notify:u1", "after restart")
	for _, c := range cs {
		if s := c.readString(); s != "after restart" {
			t.Fatalf("got %q", s)
		}
	}
	if got := tn.metric("notify_disconnects_total", "code", "1006"); got != 0 {
		t.Fatalf("%v clients were disconnected by the restart", got)
	}
	if tn.metric("notify_broker_reconnects_total") < 1 {
		t.Fatal("reconnect not counted")
	}
}

func TestEmptyUserChannelIsDropped(t *testing.T) {
	rs := redistest.Start(t)
	tn := startNode(t, rs, nil)
	tn.waitReady(200)
	c := tn.dial(token(t, "u1", nil, time.Hour), "")
	c.handshake("u1")
	tn.publish("notify:", "to nobody")
	tn.publish("notify_topic:", "to no topic")
	eventually(t, "empty ids counted", func() bool {
		return tn.metric("notify_messages_dropped_total", "reason", "empty_id") == 2
	})
	tn.publish("notify:u1", "still fine")
	if s := c.readString(); s != "still fine" {
		t.Fatalf("got %q", s)
	}
}

func TestSlowConsumerMetrics(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) {
		c.SendQueueBytes = 4096
		c.MaxPublishSize = 2048
		c.CloseTimeout = 20 * time.Second
	})
	slow := tn.dial(token(t, "slow", nil, time.Hour), "")
	slow.handshake("slow")
	fast := tn.dial(token(t, "fast", nil, time.Hour), "")
	fast.handshake("fast")
	payload := strings.Repeat("x", 1000)
	// 30 MB for a client that reads nothing: more than the loopback socket
	// buffers hold, so its queue fills and it is cut. The fast client keeps
	// receiving meanwhile.
	for i := 0; i < 30000; i++ {
		tn.publish("notify:slow", payload)
		if i%1000 == 0 {
			tn.publish("notify:fast", "tick")
			if s := fast.readString(); s != "tick" {
				t.Fatalf("fast client got %q", s)
			}
		}
	}
	// The slow client reads again: what was in flight, then 4008.
	slow.expectClose(transport.CloseSlowConsumer)
	eventually(t, "cut counted", func() bool {
		return tn.metric("notify_disconnects_total", "code", "4008") == 1 &&
			tn.metric("notify_messages_dropped_total", "reason", "slow_consumer") > 0
	})
	if got := tn.metric("notify_connections", "transport", "websocket"); got != 1 {
		t.Fatalf("connections %v, want the fast one only", got)
	}
}

func TestTokenExpiryCloses4001(t *testing.T) {
	tn := startNode(t, nil, nil)
	c := tn.dial(token(t, "u1", nil, 1500*time.Millisecond), "")
	c.handshake("u1")
	if reason := c.expectClose(transport.CloseTokenExpired); reason != "token expired" {
		t.Fatalf("reason %q", reason)
	}
	eventually(t, "disconnect counted", func() bool {
		return tn.metric("notify_disconnects_total", "code", "4001") == 1
	})
}

func TestClientFrameTooBig(t *testing.T) {
	tn := startNode(t, nil, nil)
	c := tn.dial(token(t, "u1", nil, time.Hour), "")
	c.handshake("u1")
	go c.conn.Write(t.Context(), websocket.MessageText, []byte(strings.Repeat("a", 5000)))
	c.expectClose(transport.CloseTooBig)
}

func TestDrain(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) { c.DrainTimeout = 500 * time.Millisecond })
	var cs []*wsClient
	for i := 0; i < 20; i++ {
		c := tn.dial(token(t, fmt.Sprint("u", i), nil, time.Hour), "")
		c.handshake(fmt.Sprint("u", i))
		cs = append(cs, c)
	}
	tn.waitReady(200)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- tn.Shutdown(t.Context()) }()
	eventually(t, "draining", func() bool { return tn.draining() })
	// New connections are refused while draining.
	req := upgradeRequest(t, tn.url("/notify/ws"))
	req.Header.Set("Authorization", "Bearer "+token(t, "late", nil, time.Hour))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("handshake while draining: %v, want a 503 answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("handshake while draining: %d, want 503", resp.StatusCode)
	}
	for _, c := range cs {
		if reason := c.expectClose(transport.CloseServiceRestart); reason != "shutdown" {
			t.Fatalf("reason %q", reason)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("20 closes took %v: not spread over the drain timeout", d)
	}
}

// With a drain delay the node first only fails readiness and keeps
// accepting, so that a load balancer takes it out before any refusal.
func TestDrainDelayKeepsAccepting(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) { c.DrainTimeout = 200 * time.Millisecond; c.DrainDelay = 2 * time.Second })
	tn.waitReady(200)
	done := make(chan error, 1)
	go func() { done <- tn.Shutdown(t.Context()) }()
	eventually(t, "not ready", func() bool { code, _ := tn.get("/readyz"); return code == 503 })
	if code, body := tn.get("/readyz"); !strings.Contains(body, "draining") {
		t.Fatalf("/readyz %d %s, want the reason draining", code, body)
	}
	c := tn.dial(token(t, "late", nil, time.Hour), "")
	c.handshake("late")
	if reason := c.expectClose(transport.CloseServiceRestart); reason != "shutdown" {
		t.Fatalf("reason %q", reason)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestMetricsExposition(t *testing.T) {
	tn := startNode(t, nil, nil)
	code, body := tn.get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	for _, name := range []string{
		"notify_connections", "notify_connections_accepted_total", "notify_connections_rejected_total",
		"notify_disconnects_total", "notify_messages_received_total", "notify_messages_delivered_total",
		"notify_messages_dropped_total", "notify_broker_up", "notify_broker_reconnects_total",
		"go_goroutines", "process_resident_memory_bytes", "go_gc_heap_live_bytes",
	} {
		if !strings.Contains(body, "\n"+name+" ") && !strings.Contains(body, "\n"+name+"{") {
			t.Errorf("metric %s missing", name)
		}
	}
}

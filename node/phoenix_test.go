package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/transport"
)

// phxClient speaks Phoenix Channels over a real WebSocket.
type phxClient struct {
	t    *testing.T
	conn *websocket.Conn
	vsn1 bool
	ref  int
}

func (tn *testNode) phoenix(tok, vsn string, subprotocols []string) *phxClient {
	tn.t.Helper()
	q := url.Values{}
	if vsn != "" {
		q.Set("vsn", vsn)
	}
	if tok != "" {
		q.Set("token", tok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{Subprotocols: subprotocols}
	conn, _, err := websocket.Dial(ctx, "ws://"+tn.Addr()+"/pubsub/websocket?"+q.Encode(), opts)
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.t.Cleanup(func() { conn.CloseNow() })
	return &phxClient{t: tn.t, conn: conn, vsn1: vsn == "1.0.0" || vsn == ""}
}

// send pushes a message and returns its ref. A join carries its own ref as
// join_ref, as phoenix.js sends it.
func (c *phxClient) send(joinRef, topic, event string, payload any) string {
	c.t.Helper()
	c.ref++
	ref := fmt.Sprint(c.ref)
	if event == "phx_join" {
		joinRef = ref
	}
	var msg any = []any{nilIfEmpty(joinRef), ref, topic, event, payload}
	if c.vsn1 {
		msg = map[string]any{"join_ref": nilIfEmpty(joinRef), "ref": ref, "topic": topic, "event": event, "payload": payload}
	}
	b, _ := json.Marshal(msg)
	c.raw(string(b))
	return ref
}

func (c *phxClient) raw(s string) {
	c.t.Helper()
	if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

type phxMsg struct {
	JoinRef, Ref  any
	Topic, Event  string
	Payload       json.RawMessage
	Status        string
	Response      json.RawMessage
	ResponseValue map[string]any
}

func (c *phxClient) read() phxMsg {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m phxMsg
	if c.vsn1 {
		var o struct {
			JoinRef any             `json:"join_ref"`
			Ref     any             `json:"ref"`
			Topic   string          `json:"topic"`
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(b, &o); err != nil {
			c.t.Fatalf("vsn 1 message %s: %v", b, err)
		}
		m = phxMsg{JoinRef: o.JoinRef, Ref: o.Ref, Topic: o.Topic, Event: o.Event, Payload: o.Payload}
	} else {
		var a []json.RawMessage
		if err := json.Unmarshal(b, &a); err != nil || len(a) != 5 {
			c.t.Fatalf("message %s is not a 5-array", b)
		}
		json.Unmarshal(a[0], &m.JoinRef)
		json.Unmarshal(a[1], &m.Ref)
		json.Unmarshal(a[2], &m.Topic)
		json.Unmarshal(a[3], &m.Event)
		m.Payload = a[4]
	}
	if m.Event == "phx_reply" {
		var r struct {
			Status   string          `json:"status"`
			Response json.RawMessage `json:"response"`
		}
		json.Unmarshal(m.Payload, &r)
		m.Status, m.Response = r.Status, r.Response
		json.Unmarshal(r.Response, &m.ResponseValue)
	}
	return m
}

// expectReply reads until the reply to ref.
func (c *phxClient) expectReply(ref, status string) phxMsg {
	c.t.Helper()
	m := c.read()
	if m.Event != "phx_reply" || m.Ref != ref || m.Status != status {
		c.t.Fatalf("got %+v (payload %s), want a %s reply to %s", m, m.Payload, status, ref)
	}
	return m
}

func startPhoenixNode(t *testing.T, rs *redistest.Server, mutate ...func(*Config)) *testNode {
	return startAPINode(t, rs, func(c *Config) {
		c.LongPollHold = 300 * time.Millisecond
		c.LongPollIdle = time.Second
		for _, m := range mutate {
			m(c)
		}
	})
}

func TestPhoenixChannels(t *testing.T) {
	rs := redistest.Start(t)
	tn := startPhoenixNode(t, rs)
	tn.waitReady(200)
	tn.redis.HSet(t.Context(), "notify:p1:state", "unread", "4")
	c := tn.phoenix(token(t, "p1", []string{"lobby"}, time.Hour), "2.0.0", nil)

	phxHeartbeatAndUserTopic(t, tn, c)
	lobbyRef := phxGroupTopics(t, tn, c)
	phxUnmatchedTopicsAndPing(t, c)
	// An evented broadcast (BroadcastTextMessage): its event, the string.
	if err := (apiBackend{tn.Node}).PublishEvent(t.Context(), []string{"p1"}, nil, "score", `{"a":1}`); err != nil {
		t.Fatal(err)
	}
	if m := c.read(); m.Event != "score" || string(m.Payload) != `"{\"a\":1}"` {
		t.Fatalf("%+v %s", m, m.Payload)
	}
	phxRejoinAndLeave(t, tn, c, lobbyRef)
	if got := tn.metric("notify_connections", "transport", "phoenix"); got != 1 {
		t.Fatalf("phoenix connections %v", got)
	}
}

// phxHeartbeatAndUserTopic: the heartbeat, then p1 joins user:p1 and gets
// its messages, and may not join user:p2.
func phxHeartbeatAndUserTopic(t *testing.T, tn *testNode, c *phxClient) {
	t.Helper()
	// Heartbeat.
	ref := c.send("", "phoenix", "heartbeat", map[string]any{})
	if m := c.expectReply(ref, "ok"); m.Topic != "phoenix" || string(m.Response) != "{}" {
		t.Fatalf("heartbeat reply %+v", m)
	}
	// user:<id>: the state object in the reply.
	joinRef := c.send("", "user:p1", "phx_join", map[string]any{})
	m := c.expectReply(joinRef, "ok")
	if m.ResponseValue["unread"] != "4" || m.JoinRef != joinRef {
		t.Fatalf("join reply %+v %s", m, m.Response)
	}
	// Published messages: JSON as JSON, the rest as a string.
	tn.publish("notify:p1", `{"n":1}`)
	tn.publish("notify:p1", "plain text")
	for _, want := range []string{`{"n":1}`, `"plain text"`} {
		m := c.read()
		if m.Topic != "user:p1" || m.Event != "message" || string(m.Payload) != want || m.JoinRef != nil {
			t.Fatalf("push %+v %s, want %s", m, m.Payload, want)
		}
	}
	// Another user's topic.
	ref = c.send("", "user:p2", "phx_join", map[string]any{})
	if m := c.expectReply(ref, "error"); m.ResponseValue["reason"] != "unauthorized" {
		t.Fatalf("%+v", m)
	}
}

// phxGroupTopics: group:vip is refused, group:lobby (granted by the token)
// joined and its messages arrive. It returns lobby's join ref.
func phxGroupTopics(t *testing.T, tn *testNode, c *phxClient) string {
	t.Helper()
	// Groups: granted and not.
	ref := c.send("", "group:vip", "phx_join", map[string]any{})
	if m := c.expectReply(ref, "error"); m.ResponseValue["reason"] != "unauthorized" {
		t.Fatalf("%+v", m)
	}
	lobbyRef := c.send("", "group:lobby", "phx_join", map[string]any{})
	c.expectReply(lobbyRef, "ok")
	tn.publish("notify_topic:lobby", "hi all")
	if m := c.read(); m.Topic != "group:lobby" || string(m.Payload) != `"hi all"` {
		t.Fatalf("%+v %s", m, m.Payload)
	}
	return lobbyRef
}

// phxUnmatchedTopicsAndPing: a topic no channel matches, an event on a
// topic not joined, and the ping channel.
func phxUnmatchedTopicsAndPing(t *testing.T, c *phxClient) {
	t.Helper()
	// Unknown topic, and an event on a topic not joined.
	ref := c.send("", "room:1", "phx_join", map[string]any{})
	if m := c.expectReply(ref, "error"); m.ResponseValue["reason"] != "unmatched topic" {
		t.Fatalf("%+v", m)
	}
	ref = c.send("9", "group:other", "shout", map[string]any{})
	if m := c.expectReply(ref, "error"); m.ResponseValue["reason"] != "unmatched topic" {
		t.Fatalf("%+v", m)
	}
	// ping.
	pingRef := c.send("", "ping", "phx_join", map[string]any{})
	c.expectReply(pingRef, "ok")
	ref = c.send(pingRef, "ping", "ping", map[string]any{})
	if m := c.expectReply(ref, "ok"); m.ResponseValue["ping"] != "pong" {
		t.Fatalf("%+v", m)
	}
}

// phxRejoinAndLeave: group:lobby, joined as lobbyRef, is joined again and
// then left.
func phxRejoinAndLeave(t *testing.T, tn *testNode, c *phxClient, lobbyRef string) {
	t.Helper()
	// Rejoining a joined topic closes the old join first.
	newJoin := c.send("", "group:lobby", "phx_join", map[string]any{})
	if m := c.read(); m.Event != "phx_close" || m.JoinRef != lobbyRef {
		t.Fatalf("got %+v, want phx_close for join %s", m, lobbyRef)
	}
	c.expectReply(newJoin, "ok")
	// Leave: ok, then phx_close; nothing arrives on the topic afterwards.
	ref := c.send(newJoin, "group:lobby", "phx_leave", map[string]any{})
	c.expectReply(ref, "ok")
	if m := c.read(); m.Event != "phx_close" || m.Topic != "group:lobby" {
		t.Fatalf("%+v", m)
	}
	tn.publish("notify_topic:lobby", "after leave")
	tn.publish("notify:p1", "marker")
	if m := c.read(); string(m.Payload) != `"marker"` {
		t.Fatalf("after leave got %+v %s", m, m.Payload)
	}
}

// TestPhoenixVsn1AndSubprotocolToken: vsn 1.0.0, which Phoenix also
// assumes when vsn is missing, with the token in the subprotocol.
func TestPhoenixVsn1AndSubprotocolToken(t *testing.T) {
	tn := startPhoenixNode(t, nil)
	for _, vsn := range []string{"1.0.0", ""} {
		t.Run("vsn="+vsn, func(t *testing.T) {
			tok := token(t, "v1", nil, time.Hour)
			enc := strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(tok)), "=")
			c := tn.phoenix("", vsn, []string{"phoenix", "base64url.bearer.phx." + enc})
			ref := c.send("", "user:v1", "phx_join", map[string]any{})
			if m := c.expectReply(ref, "ok"); m.Topic != "user:v1" {
				t.Fatalf("%+v", m)
			}
			tn.publish("notify:v1", "x")
			if m := c.read(); m.Event != "message" || string(m.Payload) != `"x"` {
				t.Fatalf("%+v", m)
			}
		})
	}
}

func TestPhoenixBadInput(t *testing.T) {
	tn := startPhoenixNode(t, nil)
	bystander := tn.phoenix(token(t, "ok", nil, time.Hour), "2.0.0", nil)
	bystander.expectReply(bystander.send("", "user:ok", "phx_join", map[string]any{}), "ok")
	tests := []struct {
		name  string
		frame string
		big   bool
		code  int
	}{
		{"malformed JSON", `[null, "1", "phoenix"`, false, transport.CloseInvalidPayload},
		{"not an array", `{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}`, false, transport.CloseInvalidPayload},
		{"four elements", `[null,"1","phoenix","heartbeat"]`, false, transport.CloseInvalidPayload},
		{"object ref", `[null,{"x":1},"phoenix","heartbeat",{}]`, false, transport.CloseInvalidPayload},
		{"oversize frame", `[null,"1","phoenix","heartbeat",{"pad":"` + strings.Repeat("x", 5000) + `"}]`, true, transport.CloseTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tn.phoenix(token(t, "bad", nil, time.Hour), "2.0.0", nil)
			if tt.big {
				go c.conn.Write(context.Background(), websocket.MessageText, []byte(tt.frame))
			} else {
				c.raw(tt.frame)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _, err := c.conn.Read(ctx)
			if got := websocket.CloseStatus(err); int(got) != tt.code {
				t.Fatalf("closed with %v (%v), want %d", got, err, tt.code)
			}
		})
	}
	// The others did not notice.
	tn.publish("notify:ok", "still fine")
	if m := bystander.read(); string(m.Payload) != `"still fine"` {
		t.Fatalf("%+v", m)
	}
	// A bad vsn or no token are refused before the upgrade.
	for _, q := range []string{"vsn=3.0.0&token=" + token(t, "x", nil, time.Hour), "vsn=2.0.0"} {
		req := upgradeRequest(t, tn.url("/pubsub/websocket?"+q))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 && resp.StatusCode != 401 {
			t.Fatalf("%s: %d", q, resp.StatusCode)
		}
	}
}

// lp is a Phoenix long-poll client.
type lp struct {
	t     *testing.T
	tn    *testNode
	user  string
	token string
	sess  string
}

func (tn *testNode) longPoll(user string) *lp {
	return &lp{t: tn.t, tn: tn, user: user, token: token(tn.t, user, []string{"lobby"}, time.Hour)}
}

func (l *lp) do(method, session, body string) map[string]any {
	l.t.Helper()
	q := url.Values{"vsn": {"2.0.0"}, "token": {l.token}}
	if session != "" {
		q.Add("token", session)
	}
	req, _ := http.NewRequest(method, l.tn.url("/pubsub/longpoll?"+q.Encode()), strings.NewReader(body))
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		l.t.Fatalf("%s: %q is not JSON", method, b)
	}
	return out
}

func (l *lp) open() {
	l.t.Helper()
	r := l.do(http.MethodGet, "", "")
	if r["status"] != float64(410) || r["token"] == nil {
		l.t.Fatalf("open: %v", r)
	}
	l.sess = r["token"].(string)
}

func (l *lp) post(lines ...string) map[string]any {
	return l.do(http.MethodPost, l.sess, strings.Join(lines, "\n"))
}

// poll returns the messages of the next polls until want have come.
func (l *lp) poll(want int) []string {
	l.t.Helper()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < want {
		if time.Now().After(deadline) {
			l.t.Fatalf("polled %v, want %d messages", got, want)
		}
		r := l.do(http.MethodGet, l.sess, "")
		switch r["status"] {
		case float64(200):
			for _, m := range r["messages"].([]any) {
				got = append(got, m.(string))
			}
		case float64(204):
		default:
			l.t.Fatalf("poll: %v", r)
		}
	}
	return got
}

func TestLongPoll(t *testing.T) {
	tn := startPhoenixNode(t, nil)
	l := tn.longPoll("lp1")
	l.open()
	if r := l.post(`[null,"1","phoenix","heartbeat",{}]`, `["2","2","user:lp1","phx_join",{}]`); r["status"] != float64(200) {
		t.Fatalf("post: %v", r)
	}
	got := l.poll(2)
	if !strings.Contains(got[0], `"phx_reply"`) || !strings.Contains(got[1], `["2","2","user:lp1","phx_reply",{"status":"ok","response":{}}]`) {
		t.Fatalf("replies %q", got)
	}
	tn.publish("notify:lp1", `{"via":"poll"}`)
	if got := l.poll(1); got[0] != `[null,null,"user:lp1","message",{"via":"poll"}]` {
		t.Fatalf("push %q", got)
	}
	if got := tn.metric("notify_connections", "transport", "longpoll"); got != 1 {
		t.Fatalf("longpoll sessions %v", got)
	}

	// A stale or foreign session token: gone.
	other := tn.longPoll("lp2")
	other.sess = l.sess // lp2's token with lp1's session
	if r := other.do(http.MethodGet, other.sess, ""); r["status"] != float64(410) {
		t.Fatalf("foreign session: %v", r)
	}
	stale := tn.longPoll("lp1")
	if r := stale.do(http.MethodGet, "no-such-session", ""); r["status"] != float64(410) {
		t.Fatalf("stale session: %v", r)
	}
	// Malformed input ends the session.
	if r := l.post(`{"not":"an array"}`); r["status"] != float64(400) {
		t.Fatalf("malformed post: %v", r)
	}
	if r := l.do(http.MethodGet, l.sess, ""); r["status"] != float64(410) {
		t.Fatalf("after malformed input: %v", r)
	}
	// A bad user token: forbidden.
	bad := tn.longPoll("x")
	bad.token = "garbage"
	if r := bad.do(http.MethodGet, "", ""); r["status"] != float64(403) {
		t.Fatalf("bad token: %v", r)
	}
	// An abandoned session is ended.
	idle := tn.longPoll("idle")
	idle.open()
	eventually(t, "the idle session ends", func() bool {
		return tn.metric("notify_connections", "transport", "longpoll") == 0
	})
}

func TestSSE(t *testing.T) {
	rs := redistest.Start(t)
	tn := startPhoenixNode(t, rs)
	tn.waitReady(200)
	tn.redis.HSet(t.Context(), "notify:s1:state", "k", "v")
	resp, err := http.Get(tn.url("/notify/sse?authorization=" + token(t, "s1", nil, time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || resp.Header.Get("X-Notify-Node") != "test-node" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	r := newSSEReader(resp.Body)
	readEvent := func() (string, string) {
		t.Helper()
		ev := r.next(t)
		return ev.event, ev.data
	}
	if e, d := readEvent(); e != "connect" || d != `{"kind":"connect","userID":"s1"}` {
		t.Fatalf("%s %s", e, d)
	}
	// With history on (the default) an event stream's state also says
	// where it stands: the origin of the empty stream.
	if e, d := readEvent(); e != "state" || !strings.HasPrefix(d, `{"kind":"state","state":{"k":"v"},"cursor":"0:`) {
		t.Fatalf("%s %s", e, d)
	}
	tn.publish("notify:s1", "line one\nline two")
	if e, d := readEvent(); e != "message" || d != "line one\nline two" {
		t.Fatalf("%s %q", e, d)
	}
	if got := tn.metric("notify_connections", "transport", "sse"); got != 1 {
		t.Fatalf("sse connections %v", got)
	}
	// Bad token: the JSON refusal.
	r2, _ := http.Get(tn.url("/notify/sse?authorization=garbage"))
	r2.Body.Close()
	if r2.StatusCode != 401 {
		t.Fatalf("bad token: %d", r2.StatusCode)
	}
	// Draining: a close event, then the stream ends.
	go tn.Shutdown(context.Background())
	if e, d := readEvent(); e != "close" || !strings.Contains(d, `"code":1012`) {
		t.Fatalf("%s %s", e, d)
	}
}

// TestDisconnectReachesEveryTransport: the API's Disconnect closes a user's
// /notify/ws, Phoenix, SSE and long-poll clients alike.
func TestDisconnectReachesEveryTransport(t *testing.T) {
	tn := startPhoenixNode(t, nil)
	ws := tn.dial(token(t, "d1", nil, time.Hour), "")
	ws.handshake("d1")
	phx := tn.phoenix(token(t, "d1", nil, time.Hour), "2.0.0", nil)
	phx.expectReply(phx.send("", "user:d1", "phx_join", map[string]any{}), "ok")
	l := tn.longPoll("d1")
	l.open()
	l.post(`["1","1","user:d1","phx_join",{}]`)
	l.poll(1)
	resp, err := http.Get(tn.url("/notify/sse?authorization=" + token(t, "d1", nil, time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	eventually(t, "four clients", func() bool { return tn.hub.UserCount("d1") == 4 })

	if _, err := tn.protoClient().Disconnect(withKey(t, testAPIKey), &notifypb.DisconnectRequest{UserId: "d1"}); err != nil {
		t.Fatal(err)
	}
	ws.expectClose(transport.CloseDisconnected)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := phx.conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != transport.CloseDisconnected {
				t.Fatalf("phoenix: %v", err)
			}
			break
		}
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "event: close\ndata: {\"code\":4003") {
		t.Fatalf("sse stream ended with %q", body)
	}
	if r := l.do(http.MethodGet, l.sess, ""); r["status"] != float64(410) {
		t.Fatalf("long-poll after disconnect: %v", r)
	}
	eventually(t, "no client left", func() bool { return tn.hub.UserCount("d1") == 0 })
}

// TestLongPollSlowConsumer: a session whose outbox overflows is ended (its
// next poll gets 410), without stalling delivery to anyone else.
func TestLongPollSlowConsumer(t *testing.T) {
	tn := startAPINode(t, nil, func(c *Config) {
		c.SendQueueBytes = 4096
		c.MaxPublishSize = 2048
		c.LongPollHold = 300 * time.Millisecond
	})
	l := tn.longPoll("slow-lp")
	l.open()
	l.post(`["1","1","user:slow-lp","phx_join",{}]`)
	l.poll(1)
	other := tn.dial(token(t, "other", nil, time.Hour), "")
	other.handshake("other")
	for i := 0; i < 10; i++ {
		tn.publish("notify:slow-lp", strings.Repeat("x", 1000)) // nobody polls
	}
	tn.publish("notify:other", "still delivered")
	if s := other.readString(); s != "still delivered" {
		t.Fatalf("got %q", s)
	}
	eventually(t, "the session ends", func() bool { return tn.metric("notify_connections", "transport", "longpoll") == 0 })
	if r := l.do(http.MethodGet, l.sess, ""); r["status"] != float64(410) {
		t.Fatalf("poll after overflow: %v", r)
	}
}

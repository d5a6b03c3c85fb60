package node

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/internal/redistest"
)

// phxCursorPush is the payload of a push to a join that asked for cursors.
type phxCursorPush struct {
	Cursor string          `json:"cursor"`
	Data   json.RawMessage `json:"data"`
}

// TestPhoenixJoinSince: a join with {"since": cursor} is answered with the
// state, the newest cursor and recovered, then gets what it missed and the
// live pushes with their cursors; a group join likewise; a join without
// since is today's (the state object, pushes without cursors).
func TestPhoenixJoinSince(t *testing.T) {
	rs := redistest.Start(t)
	tn := historyNode(t, rs, nil)
	tn.redis.HSet(t.Context(), "notify:p1:state", "k", "v")
	tok := token(t, "p1", []string{"news"}, time.Hour)
	var cursors []string
	for i := range 3 {
		cursors = append(cursors, tn.apiPublish("p1", strconv.Itoa(i)))
	}
	c := tn.phoenix(tok, "2.0.0", nil)
	ref := c.send("", "user:p1", "phx_join", map[string]any{"since": cursors[0]})
	reply := c.expectReply(ref, "ok")
	var r struct {
		State     map[string]string `json:"state"`
		Cursor    string            `json:"cursor"`
		Recovered bool              `json:"recovered"`
	}
	if err := json.Unmarshal(reply.Response, &r); err != nil || r.State["k"] != "v" || r.Cursor != cursors[2] || !r.Recovered {
		t.Fatalf("join reply %s (%v), want the state, cursor %s, recovered", reply.Response, err, cursors[2])
	}
	for i, want := range cursors[1:] {
		m := c.read()
		var p phxCursorPush
		if err := json.Unmarshal(m.Payload, &p); err != nil || m.Event != "message" || p.Cursor != want || string(p.Data) != strconv.Itoa(i+1) {
			t.Fatalf("replay %d: %+v %s, want cursor %s", i, m, m.Payload, want)
		}
	}
	live := tn.apiPublish("p1", `{"x":1}`)
	if m := c.read(); !strings.Contains(string(m.Payload), live) || !strings.Contains(string(m.Payload), `"data":{"x":1}`) {
		t.Fatalf("live push %s, want cursor %s", m.Payload, live)
	}
	// A group join from now on (since ""): cursors, nothing replayed.
	ref = c.send("", "group:news", "phx_join", map[string]any{"since": ""})
	if m := c.expectReply(ref, "ok"); !strings.Contains(string(m.Response), `"recovered":true`) {
		t.Fatalf("group join reply %s", m.Response)
	}
	resp, err := tn.protoClient().Publish(withKey(t, testAPIKey), &notifypb.PublishRequest{Topics: []string{"news"}, Text: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if m := c.read(); m.Topic != "group:news" || !strings.Contains(string(m.Payload), resp.Cursors[0]) {
		t.Fatalf("group push %+v %s", m, m.Payload)
	}
	// Without since: the state object itself, pushes as the Elixir service sent them.
	old := tn.phoenix(tok, "2.0.0", nil)
	ref = old.send("", "user:p1", "phx_join", map[string]any{})
	if m := old.expectReply(ref, "ok"); string(m.Response) != `{"k":"v"}` {
		t.Fatalf("plain join reply %s", m.Response)
	}
	tn.apiPublish("p1", `{"y":2}`)
	if m := old.read(); string(m.Payload) != `{"y":2}` {
		t.Fatalf("plain push %s", m.Payload)
	}
	// A cursor that cannot be read is a join error, not a closed socket.
	ref = old.send("", "group:news", "phx_join", map[string]any{"since": "garbage"})
	old.expectReply(ref, "error")
}

// TestSSEResumeWithTopics: with topics, an event's id carries where the
// stream stands in each of its streams, so Last-Event-ID resumes all.
func TestSSEResumeWithTopics(t *testing.T) {
	tn := historyNode(t, nil, nil)
	tok := token(t, "st", []string{"news"}, time.Hour)
	open := func(lastID string) *sseReader {
		req, _ := http.NewRequest(http.MethodGet, tn.url("/notify/sse?topic=news&authorization="+tok), nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		r := newSSEReader(resp.Body)
		r.next(t) // connect
		r.next(t) // state
		return r
	}
	r := open("")
	u1 := tn.apiPublish("st", "u1")
	ev := r.next(t)
	if !strings.HasPrefix(ev.id, u1+" news=0:") || ev.data != "u1" {
		t.Fatalf("user event %+v, want id %s and the empty topic's origin", ev, u1)
	}
	resp, err := tn.protoClient().Publish(withKey(t, testAPIKey), &notifypb.PublishRequest{Topics: []string{"news"}, Text: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	ev = r.next(t)
	if want := u1 + " news=" + resp.Cursors[0]; ev.id != want || ev.data != "n1" {
		t.Fatalf("topic event %+v, want id %q", ev, want)
	}
	lastID := ev.id
	// Away: one of each arrives meanwhile.
	tn.apiPublish("st", "u2")
	if _, err := tn.protoClient().Publish(withKey(t, testAPIKey), &notifypb.PublishRequest{Topics: []string{"news"}, Text: "n2"}); err != nil {
		t.Fatal(err)
	}
	r2 := open(lastID)
	got := map[string]bool{}
	for range 2 {
		got[r2.next(t).data] = true
	}
	if !got["u2"] || !got["n2"] {
		t.Fatalf("resumed with %q and got %v, want u2 and n2", lastID, got)
	}
}

// TestRawClientsPayNothing: a raw client that does not resume reads no
// history (its state frame has no cursor); one that tracks cursors
// (envelope=1) gets the newest.
func TestRawClientsPayNothing(t *testing.T) {
	tn := historyNode(t, nil, nil)
	tok := token(t, "raw", nil, time.Hour)
	cur := tn.apiPublish("raw", "x")
	if st := tn.dial(tok, "").connectResume("raw"); st.Cursor != "" {
		t.Fatalf("raw client's state %+v carries a cursor", st)
	}
	if st := tn.dial(tok, "envelope=1").connectResume("raw"); st.Cursor != cur {
		t.Fatalf("envelope client's state %+v, want cursor %s", st, cur)
	}
	if st := tn.dial(tok, "since="+cur).connectResume("raw"); st.Cursor != cur || st.Recovered == nil || !*st.Recovered {
		t.Fatalf("raw client resuming: %+v", st)
	}
}

// TestResumeFromAnEmptyStream: the state frame of an empty stream still
// carries a cursor (its origin), and a client that drops before its first
// message resumes from it without a gap; an origin older than the TTL
// cannot vouch for what came and went, so it is not recovered.
func TestResumeFromAnEmptyStream(t *testing.T) {
	tn := historyNode(t, nil, nil)
	tok := token(t, "empty", nil, time.Hour)
	st := tn.dial(tok, "envelope=1").connectResume("empty")
	if !strings.HasPrefix(st.Cursor, "0:") {
		t.Fatalf("state of an empty stream: %+v, want an origin cursor", st)
	}
	a, b := tn.apiPublish("empty", "a"), tn.apiPublish("empty", "b")
	c := tn.dial(tok, "envelope=1&since="+st.Cursor)
	if st2 := c.connectResume("empty"); st2.Recovered == nil || !*st2.Recovered || st2.Cursor != b {
		t.Fatalf("resume from the origin: %+v", st2)
	}
	for _, want := range []string{a, b} {
		if e := c.readEnvelope(); e.Cursor != want {
			t.Fatalf("replayed %+v, want %s", e, want)
		}
	}
	old := "0:" + strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)
	if st3 := tn.dial(tok, "envelope=1&since="+old).connectResume("empty"); st3.Recovered == nil || *st3.Recovered {
		t.Fatalf("resume from an origin older than the TTL: %+v, want recovered:false", st3)
	}
}

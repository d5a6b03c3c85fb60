package node

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/redistest"
)

// envelope is a message frame of /notify/ws?envelope=1.
type envelope struct {
	Kind       string          `json:"kind"`
	Cursor     string          `json:"cursor"`
	Topic      string          `json:"topic"`
	Event      string          `json:"event"`
	Data       json.RawMessage `json:"data"`
	DataBase64 string          `json:"data_base64"`
}

// stateFrame is frame 2 with history.
type stateFrame struct {
	Kind      string            `json:"kind"`
	State     map[string]string `json:"state"`
	Cursor    string            `json:"cursor"`
	Recovered *bool             `json:"recovered"`
	Topics    map[string]struct {
		Cursor    string `json:"cursor"`
		Recovered *bool  `json:"recovered"`
	} `json:"topics"`
}

// connectResume reads the connect and state frames of a client that
// resumes, and returns the state frame.
func (c *wsClient) connectResume(user string) stateFrame {
	c.t.Helper()
	var connect struct {
		Kind, UserID string
	}
	if err := json.Unmarshal([]byte(c.readString()), &connect); err != nil || connect.Kind != "connect" || connect.UserID != user {
		c.t.Fatalf("frame 1: %+v %v", connect, err)
	}
	var st stateFrame
	s := c.readString()
	if err := json.Unmarshal([]byte(s), &st); err != nil || st.Kind != "state" || st.State == nil {
		c.t.Fatalf("frame 2: %s %v", s, err)
	}
	return st
}

func (c *wsClient) readEnvelope() envelope {
	c.t.Helper()
	var e envelope
	s := c.readString()
	if err := json.Unmarshal([]byte(s), &e); err != nil || e.Kind != "message" {
		c.t.Fatalf("want a message frame, got %s (%v)", s, err)
	}
	return e
}

// apiPublish publishes text to user through the API and returns its cursor.
func (tn *testNode) apiPublish(user, text string) string {
	tn.t.Helper()
	resp, err := tn.protoClient().Publish(withKey(tn.t, testAPIKey), &notifypb.PublishRequest{UserIds: []string{user}, Text: text})
	if err != nil {
		tn.t.Fatalf("publish: %v", err)
	}
	if len(resp.Cursors) != 1 {
		return ""
	}
	return resp.Cursors[0]
}

func historyNode(t *testing.T, rs *redistest.Server, mutate func(*Config)) *testNode {
	t.Helper()
	return startAPINode(t, rs, func(c *Config) {
		c.History = broker.HistoryConfig{Size: 100, TTL: time.Minute}
		if mutate != nil {
			mutate(c)
		}
	})
}

// TestEnvelopeFrames: ?envelope=1 gives message frames with the cursor the
// API returned, the payload as a JSON value or a string (bytes that are not
// UTF-8 as data_base64), the topic for a topic's message, and no cursor for
// a plain publish (without history).
func TestEnvelopeFrames(t *testing.T) {
	for _, rs := range []*redistest.Server{nil, redistest.Start(t)} {
		tn := historyNode(t, rs, nil)
		c := tn.dial(token(t, "e1", []string{"news"}, time.Hour), "envelope=1&topic=news")
		c.connectResume("e1")
		cur := tn.apiPublish("e1", `{"n":1}`)
		if e := c.readEnvelope(); e.Cursor != cur || cur == "" || string(e.Data) != `{"n":1}` || e.Topic != "" {
			t.Fatalf("JSON payload: %+v (API cursor %q)", e, cur)
		}
		tn.apiPublish("e1", "plain text")
		if e := c.readEnvelope(); string(e.Data) != `"plain text"` {
			t.Fatalf("text payload: %+v", e)
		}
		if _, err := tn.protoClient().Publish(withKey(t, testAPIKey), &notifypb.PublishRequest{Topics: []string{"news"}, Payload: []byte{0xff, 0x00}}); err != nil {
			t.Fatal(err)
		}
		if e := c.readEnvelope(); e.Topic != "news" || e.DataBase64 != "/wA=" || e.Data != nil || e.Cursor == "" {
			t.Fatalf("binary topic payload: %+v", e)
		}
		tn.publish("notify:e1", "no history")
		if e := c.readEnvelope(); e.Cursor != "" || string(e.Data) != `"no history"` {
			t.Fatalf("plain publish: %+v", e)
		}
	}
}

// TestResume: a client that resumes from its last cursor gets exactly what
// it missed, then live messages: no gap, nothing twice.
func TestResume(t *testing.T) {
	for _, rs := range []*redistest.Server{nil, redistest.Start(t)} {
		tn := historyNode(t, rs, nil)
		tok := token(t, "r1", nil, time.Hour)
		c := tn.dial(tok, "envelope=1")
		if st := c.connectResume("r1"); st.Recovered != nil {
			t.Fatalf("recovered without since: %+v", st)
		}
		var last string
		for i := range 3 {
			tn.apiPublish("r1", strconv.Itoa(i))
			last = c.readEnvelope().Cursor
		}
		c.conn.CloseNow()
		var want []string
		for i := 3; i < 6; i++ {
			want = append(want, tn.apiPublish("r1", strconv.Itoa(i)))
		}
		c = tn.dial(tok, "envelope=1&since="+last)
		st := c.connectResume("r1")
		if st.Recovered == nil || !*st.Recovered || st.Cursor != want[2] {
			t.Fatalf("state after a resume: %+v, want recovered with cursor %s", st, want[2])
		}
		for i, w := range want {
			if e := c.readEnvelope(); e.Cursor != w || string(e.Data) != strconv.Itoa(3+i) {
				t.Fatalf("replay %d: %+v, want cursor %s", i, e, w)
			}
		}
		live := tn.apiPublish("r1", "6")
		if e := c.readEnvelope(); e.Cursor != live {
			t.Fatalf("live after the replay: %+v, want %s", e, live)
		}
		c.expectSilence(100 * time.Millisecond)
	}
}

// TestResumeGap: a cursor the history no longer reaches back to, or of
// another epoch, gives recovered:false and what the history still has.
func TestResumeGap(t *testing.T) {
	rs := redistest.Start(t)
	tn := historyNode(t, rs, func(c *Config) { c.History.Size = 3 })
	tok := token(t, "g1", nil, time.Hour)
	var cursors []string
	for i := range 6 {
		cursors = append(cursors, tn.apiPublish("g1", strconv.Itoa(i)))
	}
	tests := []struct {
		name, since string
		recovered   bool
		want        []string // payloads replayed
	}{
		{"trimmed", cursors[1], false, []string{"3", "4", "5"}},
		{"just reachable", cursors[2], true, []string{"3", "4", "5"}},
		{"newest", cursors[5], true, nil},
		{"other epoch", "1:5", false, []string{"3", "4", "5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tn.dial(tok, "since="+tt.since)
			st := c.connectResume("g1")
			if st.Recovered == nil || *st.Recovered != tt.recovered || st.Cursor != cursors[5] {
				t.Fatalf("state %+v, want recovered=%v cursor %s", st, tt.recovered, cursors[5])
			}
			for _, w := range tt.want {
				if got := c.readString(); got != w { // raw frames: the payloads verbatim
					t.Fatalf("replayed %q, want %q", got, w)
				}
			}
			c.expectSilence(100 * time.Millisecond)
		})
	}
	// After FLUSHALL the stream has a new epoch: the old cursor is a gap.
	if err := tn.redis.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := tn.apiPublish("g1", "after flush")
	c := tn.dial(tok, "since="+cursors[5])
	if st := c.connectResume("g1"); st.Recovered == nil || *st.Recovered || st.Cursor != fresh || fresh == cursors[5] {
		t.Fatalf("after FLUSHALL: %+v, want recovered=false with the new cursor %s", st, fresh)
	}
	if got := c.readString(); got != "after flush" {
		t.Fatalf("replayed %q", got)
	}
}

// TestResumeUnderConcurrentPublishing: 1,000 connections of one user
// resume from one cursor while messages keep coming: each gets every
// message after its cursor exactly once, in order, history and live in one
// sequence.
func TestResumeUnderConcurrentPublishing(t *testing.T) {
	rs := redistest.Start(t)
	tn := historyNode(t, rs, func(c *Config) { c.History.Size = 1000 })
	tok := token(t, "c1", nil, time.Hour)
	start := tn.apiPublish("c1", "start")
	stop := make(chan struct{})
	var published sync.WaitGroup
	published.Go(func() {
		for i := range 900 { // within the history: every resume recovers
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if _, err := tn.protoClient().Publish(withKey(t, testAPIKey), &notifypb.PublishRequest{UserIds: []string{"c1"}, Text: strconv.Itoa(i)}); err != nil {
				return
			}
		}
	})
	const clients = 1000
	conns := make([]*wsClient, clients)
	var dials sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range conns {
		dials.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			conns[i] = tn.dial(tok, "envelope=1&since="+start)
		})
	}
	dials.Wait()
	close(stop)
	published.Wait()
	last := tn.apiPublish("c1", "last")
	var checks sync.WaitGroup
	for i, c := range conns {
		checks.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			st := c.connectResume("c1")
			if st.Recovered == nil || !*st.Recovered {
				t.Errorf("client %d: %+v", i, st)
				return
			}
			checkSequence(t, c, start, last)
		})
	}
	checks.Wait()
}

// checkSequence reads envelopes until cursor last and checks that their
// sequence numbers run from after to last without a gap or a repeat.
func checkSequence(t *testing.T, c *wsClient, after, last string) {
	t.Helper()
	seq := func(cur string) int {
		n, err := strconv.Atoi(cur[strings.LastIndex(cur, ":")+1:])
		if err != nil {
			t.Fatalf("cursor %q", cur)
		}
		return n
	}
	want := seq(after) + 1
	for want <= seq(last) {
		e := c.readEnvelope()
		if got := seq(e.Cursor); got != want {
			t.Errorf("got entry %d, want %d (a gap or a repeat)", got, want)
			return
		}
		want++
	}
}

// TestHistoryOff: NOTIFY_HISTORY_SIZE=0 is today's behaviour: no cursor in
// the state frame, none from the API, since refused nowhere (ignored).
func TestHistoryOff(t *testing.T) {
	tn := historyNode(t, nil, func(c *Config) { c.History.Size = 0 })
	c := tn.dial(token(t, "o1", nil, time.Hour), "since=abc:1")
	if st := c.connectResume("o1"); st.Cursor != "" || st.Recovered != nil {
		t.Fatalf("state with history off: %+v", st)
	}
	if cur := tn.apiPublish("o1", "x"); cur != "" {
		t.Fatalf("cursor %q with history off", cur)
	}
	if got := c.readString(); got != "x" {
		t.Fatalf("got %q", got)
	}
}

// TestBadSince: a cursor that cannot be read is refused before the upgrade.
func TestBadSince(t *testing.T) {
	tn := historyNode(t, nil, nil)
	for _, q := range []string{"since=nonsense", "since=e:0", "topic=news&since.other=e:1"} {
		_, err := tn.tryDial(token(t, "b1", []string{"news"}, time.Hour), q, nil)
		if err == nil {
			t.Fatalf("%s: connected", q)
		}
		if !strings.Contains(err.Error(), "400") {
			t.Fatalf("%s: %v, want 400", q, err)
		}
	}
}

// TestResumeRedisDown: with Redis down a connect without since is refused
// (503, as without history); one with since gets recovered:false at once.
func TestResumeRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	tn := historyNode(t, rs, nil)
	tok := token(t, "d1", nil, time.Hour)
	cur := tn.apiPublish("d1", "x")
	rs.Stop()
	if _, err := tn.tryDial(tok, "", nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("without since: %v, want 503", err)
	}
	start := time.Now()
	c := tn.dial(tok, "since="+cur)
	if st := c.connectResume("d1"); st.Recovered == nil || *st.Recovered {
		t.Fatalf("with since and Redis down: %+v, want recovered:false", st)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
	// The API says so too.
	_, err := tn.protoClient().Publish(withKey(t, testAPIKey), &notifypb.PublishRequest{UserIds: []string{"d1"}, Text: "y"})
	if err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("publish with Redis down: %v", err)
	}
}

// TestSSEResume: events carry their cursor as id; an EventSource that
// reconnects with Last-Event-ID gets what it missed.
func TestSSEResume(t *testing.T) {
	tn := historyNode(t, nil, nil)
	tok := token(t, "s1", nil, time.Hour)
	first := tn.apiPublish("s1", "one")
	second := tn.apiPublish("s1", "two")
	req, _ := http.NewRequest(http.MethodGet, tn.url("/notify/sse?authorization="+tok), nil)
	req.Header.Set("Last-Event-ID", first)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := newSSEReader(resp.Body)
	if ev := r.next(t); ev.event != "connect" {
		t.Fatalf("%+v", ev)
	}
	if ev := r.next(t); ev.event != "state" || !strings.Contains(ev.data, `"recovered":true`) || !strings.Contains(ev.data, second) {
		t.Fatalf("state %+v", ev)
	}
	if ev := r.next(t); ev.event != "message" || ev.id != second || ev.data != "two" {
		t.Fatalf("replayed %+v, want id %s", ev, second)
	}
	third := tn.apiPublish("s1", "three")
	if ev := r.next(t); ev.id != third || ev.data != "three" {
		t.Fatalf("live %+v", ev)
	}
}

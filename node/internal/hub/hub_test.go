package hub

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records what the hub hands a client. The hub is tested against the
// Sink contract; the protocols' sinks on real connections are tested by the
// node's integration tests.
type sink struct {
	mu      sync.Mutex
	got     []string // payloads, with "event:" prefixed for events
	directs []bool
	closed  int // close code, 0 = open
	refuse  bool
	// onDeliver, when set, sees each message handed over.
	onDeliver func(*Message)
}

func (s *sink) Deliver(m *Message, direct bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse || s.closed != 0 {
		return false
	}
	p := m.Payload
	if m.Event != "" {
		p = m.Event + ":" + p
	}
	s.got = append(s.got, p)
	s.directs = append(s.directs, direct)
	if s.onDeliver != nil {
		s.onDeliver(m)
	}
	return true
}

func (s *sink) Close(code int, _ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed == 0 {
		s.closed = code
	}
}

func (s *sink) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed != 0
}

func (s *sink) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func newClient(user string) (*Client, *sink) {
	s := &sink{}
	return &Client{User: user, Transport: TransportWebSocket, Sink: s}, s
}

func newHub(t *testing.T) (*Hub, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return New(reg, nil), reg
}

func msg(payload string) broker.Message { return broker.Message{Payload: payload} }

func user(name string) broker.Target  { return broker.Target{Name: name} }
func topic(name string) broker.Target { return broker.Target{Topic: true, Name: name} }

func TestDeliverReachesMembersOnly(t *testing.T) {
	h, _ := newHub(t)
	a, as := newClient("alice")
	b, bs := newClient("bob")
	lurker, ls := newClient("carol") // registered, joined to nothing
	h.Add(a)
	h.AddUnjoined(b)
	h.JoinUser(b)
	h.AddUnjoined(lurker)
	h.JoinTopic(b, "news")

	h.Deliver(user("alice"), msg("for alice"))
	h.Deliver(user("bob"), msg("for bob"))
	h.Deliver(topic("news"), msg("news"))
	h.Deliver(topic("sport"), msg("sport"))
	h.Deliver(user("carol"), msg("for carol"))
	h.DeliverEvent(user("alice"), "hi", "greeting")

	tests := []struct {
		name string
		s    *sink
		want []string
	}{
		{"alice", as, []string{"for alice", "greeting:hi"}},
		{"bob", bs, []string{"for bob", "news"}},
		{"carol", ls, nil},
	}
	for _, tt := range tests {
		if got := tt.s.received(); !slices.Equal(got, tt.want) {
			t.Errorf("%s got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// bigAndSmall registers directFanout+1 clients of users u0, u1, ..., all
// in topic "big" (more than directFanout), the first n also in small.
func bigAndSmall(h *Hub, small string, n int) []*sink {
	var sinks []*sink
	for i := range directFanout + 1 {
		c, s := newClient(fmt.Sprint("u", i))
		h.Add(c)
		h.JoinTopic(c, "big")
		if i < n {
			h.JoinTopic(c, small)
		}
		sinks = append(sinks, s)
	}
	return sinks
}

func TestDirectForFewQueuedForMany(t *testing.T) {
	h, _ := newHub(t)
	sinks := bigAndSmall(h, "small", directFanout)
	h.Deliver(topic("small"), msg("1"))
	h.Deliver(topic("big"), msg("2"))
	for i, s := range sinks {
		want := []bool{true, false}
		if i == directFanout {
			want = []bool{false}
		}
		if !slices.Equal(s.directs, want) {
			t.Errorf("client %d: direct %v, want %v", i, s.directs, want)
		}
	}
}

// TestSharedFramesForFew: a message to a few connections has its frames
// built once in a pooled buffer (SharedFrame), and one to many has none
// (they share Frame's bytes).
func TestSharedFramesForFew(t *testing.T) {
	h, _ := newHub(t)
	sinks := bigAndSmall(h, "pair", 2)
	encoded := 0
	encode := func(m *Message, p *transport.FramePool) *transport.SharedFrame {
		encoded++
		return p.DataFrame(m.Payload)
	}
	var got []string
	for _, s := range sinks {
		s.onDeliver = func(m *Message) {
			f := m.SharedFrame(FormatWebSocket, encode)
			got = append(got, fmt.Sprint(m.Name, " ", f != nil))
			if f != nil && string(f.Bytes()[2:]) != m.Payload {
				t.Errorf("shared frame %q for payload %q", f.Bytes(), m.Payload)
			}
		}
	}
	h.Deliver(topic("pair"), msg("1"))
	h.Deliver(topic("big"), msg("2"))
	if encoded != 1 {
		t.Errorf("the pair's frame was built %d times, want once", encoded)
	}
	want := []string{"pair true", "pair true"}
	for range directFanout + 1 {
		want = append(want, "big false")
	}
	if !slices.Equal(got, want) {
		t.Errorf("deliveries %v, want %v", got, want)
	}
}

// DeliverBatched never writes on the caller's goroutine, small set or
// large: every client gets the message with the hub's batch, for its loop
// to write once Flush wakes it.
func TestDeliverBatchedLeavesTheWritesToTheLoops(t *testing.T) {
	h, _ := newHub(t)
	c, s := newClient("u1")
	var batches []*transport.Batch
	s.onDeliver = func(m *Message) { batches = append(batches, m.Batch) }
	h.Add(c)
	h.DeliverBatched(user("u1"), msg("1"))
	h.Deliver(user("u1"), msg("2"))
	h.Flush()
	if got := s.received(); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("got %q", got)
	}
	if !slices.Equal(s.directs, []bool{false, true}) {
		t.Errorf("direct %v, want [false true]", s.directs)
	}
	if len(batches) != 2 || batches[0] != &h.batch || batches[1] != nil {
		t.Errorf("batches %v, want the hub's, then none", batches)
	}
}

// Positions stay right through any order of joins and departures: every
// remaining member still gets messages, none that left does.
func TestMembershipChurn(t *testing.T) {
	h, _ := newHub(t)
	rng := rand.New(rand.NewPCG(1, 2))
	type member struct {
		c      *Client
		s      *sink
		topics []string
	}
	var live []*member
	for range 2000 {
		if len(live) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(live))
			h.Remove(live[i].c, 1000, 0)
			live = append(live[:i], live[i+1:]...)
			continue
		}
		c, s := newClient(fmt.Sprint("u", rng.IntN(20)))
		m := &member{c: c, s: s}
		h.AddUnjoined(c)
		h.JoinUser(c)
		for _, tp := range []string{"a", "b", "c"} {
			if rng.IntN(2) == 0 {
				h.JoinTopic(c, tp)
				m.topics = append(m.topics, tp)
			}
		}
		live = append(live, m)
	}
	for _, tp := range []string{"a", "b", "c"} {
		h.Deliver(topic(tp), msg(tp))
	}
	for _, m := range live {
		h.Deliver(user(m.c.User), msg("user"))
	}
	for _, m := range live {
		got := m.s.received()
		for _, tp := range m.topics {
			if !slices.Contains(got, tp) {
				t.Fatalf("%s lost topic %s (got %q)", m.c.User, tp, got)
			}
		}
		if len(got) < len(m.topics)+1 || got[len(m.topics)] != "user" {
			t.Fatalf("%s got %q, want its topics then its user messages", m.c.User, got)
		}
	}
	if n := len(h.Clients()); n != len(live) {
		t.Fatalf("registry holds %d clients, %d are live", n, len(live))
	}
}

func TestLeaveAndRemove(t *testing.T) {
	h, _ := newHub(t)
	c, s := newClient("alice")
	h.Add(c)
	h.JoinUser(c) // already: nothing happens
	h.JoinTopic(c, "news")
	h.JoinTopic(c, "news") // twice is once
	h.Deliver(topic("news"), msg("1"))
	h.LeaveTopic(c, "news")
	h.LeaveTopic(c, "news") // not a member any more: nothing happens
	h.Deliver(topic("news"), msg("2"))
	h.LeaveUser(c)
	h.Deliver(user("alice"), msg("3"))
	if n := len(h.Clients()); n != 1 {
		t.Fatalf("a client that left its user is not registered any more (%d clients)", n)
	}
	h.JoinUser(c)
	h.Deliver(user("alice"), msg("4"))
	h.Remove(c, 1000, 0)
	h.Remove(c, 1000, 0)
	h.Deliver(user("alice"), msg("5"))
	if got, want := s.received(), []string{"1", "4"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if len(h.Clients()) != 0 || h.UserCount("alice") != 0 {
		t.Fatal("removed client still registered")
	}
}

func TestCounting(t *testing.T) {
	h, reg := newHub(t)
	a, _ := newClient("alice")
	b, _ := newClient("bob")
	b.Transport = TransportLongPoll
	handshaking, _ := newClient("carol")
	for _, c := range []*Client{a, b, handshaking} {
		h.Add(c)
		h.JoinUser(c)
	}
	for _, c := range []*Client{a, b, b} { // b once
		h.Opened(c)
	}
	h.Accepted(a)
	if h.Open() != 2 {
		t.Fatalf("Open() = %d, want 2", h.Open())
	}
	h.Deliver(user("alice"), msg("x"))
	h.Deliver(user(""), msg("nobody"))
	refusing, rs := newClient("dave")
	rs.refuse = true
	h.Add(refusing)
	h.JoinUser(refusing)
	h.Deliver(user("dave"), msg("not taken"))

	h.Remove(a, 4008, 3)
	h.Remove(handshaking, 1000, 0) // never opened: no disconnect counted
	failed, _ := newClient("erin")
	h.Add(failed)
	h.Opened(failed)
	h.Remove(failed, 0, 0) // its attach failed: no disconnect counted
	checks := []struct {
		metric string
		labels prometheus.Labels
		want   float64
	}{
		{"notify_connections", prometheus.Labels{"transport": "websocket"}, 0},
		{"notify_connections", prometheus.Labels{"transport": "longpoll"}, 1},
		{"notify_connections_accepted_total", prometheus.Labels{"transport": "websocket"}, 1},
		{"notify_disconnects_total", prometheus.Labels{"code": "4008"}, 1},
		{"notify_disconnects_total", prometheus.Labels{"code": "1000"}, 0},
		{"notify_disconnects_total", prometheus.Labels{"code": "other"}, 0},
		{"notify_messages_received_total", nil, 3},
		{"notify_messages_delivered_total", nil, 1},
		{"notify_messages_dropped_total", prometheus.Labels{"reason": "empty_id"}, 1},
		{"notify_messages_dropped_total", prometheus.Labels{"reason": "slow_consumer"}, 3},
	}
	for _, c := range checks {
		if got := gathered(t, reg, c.metric, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.metric, c.labels, got, c.want)
		}
	}
	if h.Open() != 1 {
		t.Fatalf("Open() = %d after removals, want 1", h.Open())
	}
}

func gathered(t *testing.T, reg *prometheus.Registry, name string, labels prometheus.Labels) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// Joins, departures and deliveries at once, for the race detector: the
// membership bookkeeping is the hub's own, under its own locks.
func TestConcurrentMembership(t *testing.T) {
	h, _ := newHub(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 300 {
				c, _ := newClient(fmt.Sprint("u", (w+i)%5))
				h.Add(c)
				h.JoinUser(c)
				h.JoinTopic(c, fmt.Sprint("t", i%3))
				h.JoinTopic(c, fmt.Sprint("t", (i+1)%3))
				h.Opened(c)
				h.LeaveTopic(c, fmt.Sprint("t", i%3))
				h.Remove(c, 1000, 0)
			}
		})
	}
	wg.Go(func() {
		for i := range 3000 {
			h.Deliver(topic(fmt.Sprint("t", i%3)), msg("x"))
			h.Deliver(user(fmt.Sprint("u", i%5)), msg("y"))
		}
	})
	wg.Wait()
	if h.Open() != 0 || len(h.Clients()) != 0 {
		t.Fatalf("open %d, registered %d after everyone left", h.Open(), len(h.Clients()))
	}
}

func TestClosePaced(t *testing.T) {
	var clients []*Client
	var sinks []*sink
	for i := range 50 {
		c, s := newClient(fmt.Sprint("u", i))
		clients, sinks = append(clients, c), append(sinks, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ClosePaced(ctx, clients, time.Hour, 1012, "shutdown")
	}()
	// Spread over an hour, the first close comes at once and the rest wait;
	// ending ctx closes the rest at once.
	cancel()
	<-done
	for i, s := range sinks {
		if s.closed != 1012 {
			t.Fatalf("client %d: close code %d, want 1012", i, s.closed)
		}
	}
}

// interestLog records what an Interest is told, as "+u:name" / "-t:name".
type interestLog struct{ got []string }

func (l *interestLog) Want(t broker.Target)   { l.got = append(l.got, "+"+kind(t)+t.Name) }
func (l *interestLog) Unwant(t broker.Target) { l.got = append(l.got, "-"+kind(t)+t.Name) }

func kind(t broker.Target) string {
	if t.Topic {
		return "t:"
	}
	return "u:"
}

// The interest hears of a user's first registered client (joined to its
// user or not) and of its last, and of a topic's first and last member.
func TestInterestFollowsFirstAndLast(t *testing.T) {
	h := New(prometheus.NewRegistry(), nil)
	log := &interestLog{}
	h.Follow(log)
	a, _ := newClient("u")
	b, _ := newClient("u")
	step := func(what string, f func(), want ...string) {
		t.Helper()
		log.got = nil
		f()
		if !slices.Equal(log.got, want) {
			t.Fatalf("%s: told %q, want %q", what, log.got, want)
		}
	}
	step("first client", func() { h.Add(a) }, "+u:u")
	step("second, unjoined", func() { h.AddUnjoined(b) })
	step("first in a topic", func() { h.JoinTopic(a, "sport") }, "+t:sport")
	step("second in the topic", func() { h.JoinTopic(b, "sport") })
	step("joining the user", func() { h.JoinUser(b) })
	step("one leaves the topic", func() { h.LeaveTopic(a, "sport") })
	step("one client goes", func() { h.Remove(a, 1000, 0) })
	step("leaving the user only", func() { h.LeaveUser(b) })
	step("the last goes, with its topic", func() { h.Remove(b, 1000, 0) }, "-t:sport", "-u:u")
	step("removed twice", func() { h.Remove(b, 1000, 0) })
}

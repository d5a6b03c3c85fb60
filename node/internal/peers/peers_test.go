package peers

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/node/internal/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sink struct {
	mu   sync.Mutex
	got  []string
	code int
}

func (s *sink) Deliver(m *hub.Message, _ bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, m.Event+":"+m.Payload)
	return true
}
func (s *sink) Close(code int, _ string) { s.mu.Lock(); s.code = code; s.mu.Unlock() }
func (s *sink) Closed() bool             { s.mu.Lock(); defer s.mu.Unlock(); return s.code != 0 }

type directory []cluster.Member

func (d directory) Peers() []cluster.Member { return d }

type relays struct{ via []string }

func (r *relays) CloseRelayedVia(node string) { r.via = append(r.via, node) }

func newPeers(t *testing.T, name string, b broker.Broker, h *hub.Hub, dir directory, secret string) (*Peers, *relays) {
	t.Helper()
	r := &relays{}
	p, err := New(Config{NodeName: name, Broker: b, Hub: h, Directory: dir, Relays: r, Auth: cluster.NewPeerAuth([]byte(secret))})
	if err != nil {
		t.Fatal(err)
	}
	return p, r
}

func client(h *hub.Hub, user string, topics ...string) *sink {
	s := &sink{}
	c := &hub.Client{User: user, Sink: s}
	h.Add(c)
	h.JoinUser(c)
	for _, tp := range topics {
		h.JoinTopic(c, tp)
	}
	return s
}

// Commands travel through a real (memory) broker to every node's Control.
func TestCommands(t *testing.T) {
	b := broker.NewMemory(nil, broker.HistoryConfig{})
	h := hub.New(nil, nil)
	p, r := newPeers(t, "a", b, h, nil, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Run(ctx, struct {
			*hub.Hub
			*Peers
		}{h, p})
	}()
	defer func() { cancel(); <-done }()
	await.True(t, "the broker runs", func() bool { return b.Ready() == nil })
	alice, bob := client(h, "alice"), client(h, "bob", "news")

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(p.PublishEvent(ctx, []string{"alice"}, []string{"news"}, "score", "1-0"))
	must(p.Disconnect(ctx, "alice"))
	must(p.AnnounceDrain(ctx)) // our own: ignored
	p.Control(`{"op":"drain-via","node":"b"}`)
	p.Control(`not json`)
	p.Control(`{"op":"from-a-newer-node"}`)

	if got := strings.Join(alice.got, ","); got != "score:1-0" || alice.code != 4003 {
		t.Errorf("alice got %q and close %d, want the event then 4003", got, alice.code)
	}
	if got := strings.Join(bob.got, ","); got != "score:1-0" || bob.code != 0 {
		t.Errorf("bob got %q and close %d, want the topic's event and no close", got, bob.code)
	}
	if len(r.via) != 1 || r.via[0] != "b" {
		t.Errorf("relays closed for %v, want [b] only", r.via)
	}
}

// Presence sums over the members, asked over real HTTP with signed
// requests; a member with another secret fails the whole count.
func TestPresence(t *testing.T) {
	b := broker.NewMemory(nil, broker.HistoryConfig{})
	local, remote := hub.New(nil, nil), hub.New(nil, nil)
	client(local, "alice")
	client(remote, "alice")
	client(remote, "bob")
	for _, tt := range []struct {
		name, secret string
		ok           bool
	}{{"same secret", "s3cret-s3cret-s3cret", true}, {"other secret", "another-secret-here", false}} {
		t.Run(tt.name, func(t *testing.T) {
			theirs, _ := newPeers(t, "b", b, remote, nil, tt.secret)
			srv := httptest.NewServer(http.HandlerFunc(theirs.ServePresence))
			defer srv.Close()
			ours, _ := newPeers(t, "a", b, local, directory{{Name: "b", RelayAddr: strings.TrimPrefix(srv.URL, "http://")}}, "s3cret-s3cret-s3cret")
			defer ours.client.CloseIdleConnections()
			got, err := ours.Presence(context.Background(), []string{"alice", "bob", "carol"})
			if !tt.ok {
				if !errors.Is(err, broker.ErrUnavailable) {
					t.Fatalf("presence %v %v, want unavailable", got, err)
				}
				return
			}
			if err != nil || got["alice"] != 2 || got["bob"] != 1 || got["carol"] != 0 {
				t.Fatalf("presence %v %v, want alice 2, bob 1, carol 0", got, err)
			}
		})
	}
}

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

// directory: members, and the owner of each user ("" or missing: this node).
type directory struct {
	members []cluster.Member
	owners  map[string]string
}

func (d directory) Peers() []cluster.Member { return d.members }
func (d directory) Owner(user string) (string, string) {
	return d.owners[user], ""
}

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
	p, r := newPeers(t, "a", b, h, directory{}, "")
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

// Presence asks each user's owner alone, over real HTTP with signed
// requests, and adds this node's own count; users this node owns cost no
// call; an owner with another secret fails the whole count.
func TestPresence(t *testing.T) {
	b := broker.NewMemory(nil, broker.HistoryConfig{})
	local, remote := hub.New(nil, nil), hub.New(nil, nil)
	client(local, "alice")
	client(remote, "alice")
	client(remote, "bob")
	client(remote, "dave") // owned here: b is not asked about him
	for _, tt := range []struct {
		name, secret string
		users        []string
		calls        int
		ok           bool
	}{
		{"same secret", "s3cret-s3cret-s3cret", []string{"alice", "bob", "carol", "dave"}, 1, true},
		{"only local users", "s3cret-s3cret-s3cret", []string{"dave"}, 0, true},
		{"other secret", "another-secret-here", []string{"alice"}, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			theirs, _ := newPeers(t, "b", b, remote, directory{}, tt.secret)
			var mu sync.Mutex
			calls := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				mu.Unlock()
				theirs.ServePresence(w, r)
			}))
			defer srv.Close()
			dir := directory{
				members: []cluster.Member{{Name: "b", RelayAddr: strings.TrimPrefix(srv.URL, "http://")}},
				owners:  map[string]string{"alice": "b", "bob": "b", "carol": "b"},
			}
			ours, _ := newPeers(t, "a", b, local, dir, "s3cret-s3cret-s3cret")
			defer ours.client.CloseIdleConnections()
			got, err := ours.Presence(context.Background(), tt.users)
			mu.Lock()
			if calls != tt.calls {
				t.Errorf("%d calls to the owner, want %d", calls, tt.calls)
			}
			mu.Unlock()
			if !tt.ok {
				if !errors.Is(err, broker.ErrUnavailable) {
					t.Fatalf("presence %v %v, want unavailable", got, err)
				}
				return
			}
			want := map[string]uint32{"alice": 2, "bob": 1, "carol": 0, "dave": 0}
			for _, u := range tt.users {
				if got[u] != want[u] {
					t.Fatalf("presence %v %v, want %v", got, err, want)
				}
			}
		})
	}
}

// TestPresenceOwnerUnreachable: an owner that is not among the reachable
// members fails the count.
func TestPresenceOwnerUnreachable(t *testing.T) {
	b := broker.NewMemory(nil, broker.HistoryConfig{})
	ours, _ := newPeers(t, "a", b, hub.New(nil, nil), directory{owners: map[string]string{"u": "gone"}}, "s3cret-s3cret-s3cret")
	if _, err := ours.Presence(context.Background(), []string{"u"}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("presence: %v, want unavailable", err)
	}
}

package placement

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/ring"
	"github.com/notify-dev/notify/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	p        *Placement
	h        *hub.Hub
	draining bool
	mu       sync.Mutex
}

func newFixture(t *testing.T, self string) *fixture {
	t.Helper()
	srv, err := transport.NewServer(transport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	f := &fixture{h: hub.New(nil, nil)}
	f.p, err = New(Config{
		NodeName: self, RebalanceRate: 10000, RequestTimeout: 1e9, Hub: f.h, Transport: srv,
		Draining: func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.draining },
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func member(name string) cluster.Member {
	return cluster.Member{Name: name, RelayAddr: name + ":3000", RingHash: ring.DefaultConfig().Hash(), State: "alive"}
}

func TestOnMembershipBuildsTheRing(t *testing.T) {
	f := newFixture(t, "a")
	odd := member("odd")
	odd.RingHash = "other-settings"
	broken := member("broken")
	broken.MetaError = "unknown metadata version"
	// Our own join event may not have come yet: we are on the ring anyway.
	f.p.OnMembership([]cluster.Member{member("b"), odd, broken})
	if got := f.p.Ring().Members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("ring %v, want [a b]: members with other settings or unreadable metadata stay off", got)
	}
	st := f.p.Status("")
	for _, m := range st.Members {
		if on := m.Name == "b"; m.OnRing != on {
			t.Errorf("/cluster says %s on_ring=%v", m.Name, m.OnRing)
		}
	}
	// A draining node leaves itself off.
	f.mu.Lock()
	f.draining = true
	f.mu.Unlock()
	f.p.OnMembership([]cluster.Member{member("b")})
	if got := f.p.Ring().Members(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("ring %v while draining, want [b]", got)
	}
}

func TestOwner(t *testing.T) {
	f := newFixture(t, "a")
	f.p.OnMembership([]cluster.Member{member("a"), member("b")})
	mine, theirs := 0, 0
	for i := range 200 {
		u := fmt.Sprint("u", i)
		name, addr := f.p.Owner(u)
		switch owner := f.p.Ring().Locate(u); {
		case owner == "a" && name == "" && addr == "":
			mine++
		case owner == "b" && name == "b" && addr == "b:3000":
			theirs++
		default:
			t.Fatalf("Owner(%s) = %q %q, ring says %q", u, name, addr, owner)
		}
		if st := f.p.Status(u); st.User == nil || st.User.Owner != f.p.Ring().Locate(u) {
			t.Fatalf("/cluster?user=%s: %+v", u, st.User)
		}
	}
	if mine == 0 || theirs == 0 {
		t.Fatalf("200 users: %d here, %d on b", mine, theirs)
	}
	if peers := f.p.Peers(); len(peers) != 2 { // member() marks none local
		t.Fatalf("peers %v", peers)
	}
}

// sink records a close.
type sink struct {
	mu   sync.Mutex
	code int
	why  string
}

func (s *sink) Deliver(*hub.Message, bool) bool { return true }
func (s *sink) Close(code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code == 0 {
		s.code, s.why = code, reason
	}
}
func (s *sink) Closed() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.code != 0 }

// A membership change closes, with 1012 "moved", exactly the clients whose
// user another member now owns.
func TestRebalanceClosesOnlyMovedUsers(t *testing.T) {
	f := newFixture(t, "a")
	sinks := map[string]*sink{}
	for i := range 100 {
		u := fmt.Sprint("u", i)
		s := &sink{}
		c := &hub.Client{User: u, Sink: s}
		f.h.Add(c)
		f.h.JoinUser(c)
		sinks[u] = s
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	f.p.OnMembership([]cluster.Member{member("a"), member("b")})
	moved := 0
	for u := range sinks {
		if owner, _ := f.p.Owner(u); owner != "" {
			moved++
		}
	}
	await.True(t, "the moved users' clients closed", func() bool {
		n := 0
		for _, s := range sinks {
			if s.Closed() {
				n++
			}
		}
		return n == moved
	})
	for u, s := range sinks {
		owner, _ := f.p.Owner(u)
		s.mu.Lock()
		code, why := s.code, s.why
		s.mu.Unlock()
		switch {
		case owner != "" && (code != transport.CloseServiceRestart || why != "moved"):
			t.Errorf("%s (now b's) closed with %d %q, want 1012 moved", u, code, why)
		case owner == "" && code != 0:
			t.Errorf("%s (still a's) closed with %d", u, code)
		}
	}
}

func TestCloseRelayedVia(t *testing.T) {
	f := newFixture(t, "a")
	via, direct := &sink{}, &sink{}
	for _, c := range []*hub.Client{{User: "x", Via: "b", Sink: via}, {User: "y", Sink: direct}} {
		f.h.Add(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.p.Run(ctx) }()
	f.p.CloseRelayedVia("b")
	await.True(t, "the client relayed by b closed", via.Closed)
	cancel()
	<-done
	if direct.Closed() {
		t.Fatal("a client that came directly was closed")
	}
}

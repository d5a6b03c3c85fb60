package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/notify-dev/notify/internal/await"
)

// testMember is a cluster member on loopback with its latest view.
type testMember struct {
	*Cluster
	stop func() // ends Run and waits for it; also run by t.Cleanup

	mu   sync.Mutex
	view []Member
}

func (m *testMember) setView(v []Member) {
	m.mu.Lock()
	m.view = v
	m.mu.Unlock()
}

func (m *testMember) names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, x := range m.view {
		out = append(out, x.Name)
	}
	return out
}

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("NOTIFY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return nil
}

// refusalCounter is a slog.Handler that counts the errors memberlist logs
// (each stream or packet it refuses for a wrong key, a missing key or another
// label is one) and passes every record on to next.
type refusalCounter struct {
	next slog.Handler
	n    *atomic.Int64
}

// countRefusals returns a logger that counts into n and logs through l (nil:
// nowhere).
func countRefusals(l *slog.Logger, n *atomic.Int64) *slog.Logger {
	next := slog.DiscardHandler
	if l != nil {
		next = l.Handler()
	}
	return slog.New(refusalCounter{next, n})
}

func (h refusalCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.next.Enabled(ctx, l)
}

func (h refusalCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" && a.Value.String() == "memberlist" {
				h.n.Add(1)
				return false
			}
			return true
		})
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h refusalCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return refusalCounter{h.next.WithAttrs(as), h.n}
}

func (h refusalCounter) WithGroup(g string) slog.Handler {
	return refusalCounter{h.next.WithGroup(g), h.n}
}

// newMember creates, joins and runs a member; Run ends with the test.
func newMember(t *testing.T, name string, mutate func(*Config)) (*testMember, error) {
	t.Helper()
	tm, err := newJoined(t, name, mutate)
	if err != nil {
		return nil, err
	}
	tm.run(t)
	return tm, nil
}

// newJoined creates a member and makes its first join, without running it.
// Gossip is shut down at the end of the test (a Close after Run is harmless).
func newJoined(t *testing.T, name string, mutate func(*Config)) (*testMember, error) {
	t.Helper()
	cfg := Config{
		NodeName:       name,
		BindAddr:       "127.0.0.1:0",
		Label:          "notify",
		RelayPort:      3000,
		RingHash:       "r1",
		RejoinInterval: 200 * time.Millisecond,
		Local:          true,
		Logger:         logger(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	tm := &testMember{}
	c, err := New(cfg, tm.setView)
	if err != nil {
		return nil, err
	}
	tm.Cluster = c
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
	})
	if err := c.Join(context.Background()); err != nil {
		return nil, err
	}
	return tm, nil
}

// run starts m.Run, ended (and waited for) by m.stop or the end of the test.
func (m *testMember) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	m.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: Run = %v, want nil", m.cfg.NodeName, err)
			}
		case <-time.After(await.DefaultTimeout):
			t.Errorf("%s: Run did not return within %s of its context ending", m.cfg.NodeName, await.DefaultTimeout)
		}
	})
	t.Cleanup(m.stop)
}

func mustMember(t *testing.T, name string, mutate func(*Config)) *testMember {
	t.Helper()
	m, err := newMember(t, name, mutate)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *testMember) addr() string { return m.list.LocalNode().Address() }

func joinTo(ms ...*testMember) func(*Config) {
	return func(c *Config) {
		for _, m := range ms {
			c.Join = append(c.Join, m.addr())
		}
	}
}

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		meta Meta
	}{
		{"revision 1: no internal address", Meta{RelayAddr: "10.0.0.7:3000", RingHash: "abcdef"}},
		{"revision 2: internal address", Meta{RelayAddr: "10.0.0.7:3000", RingHash: "abcdef", InternalAddr: "10.0.0.7:9090"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.meta.encode()
			if err != nil {
				t.Fatal(err)
			}
			if got, err := decodeMeta(b); err != nil || got != tt.meta {
				t.Fatalf("%v %v", got, err)
			}
		})
	}
	for _, bad := range [][]byte{nil, {2, 0, 0}, {metaVersion, 9, 'a'}, {metaVersion, 0, 0, 9, 'a'}} {
		if _, err := decodeMeta(bad); err == nil {
			t.Errorf("%v decoded", bad)
		}
	}
	if _, err := (Meta{RelayAddr: strings.Repeat("x", 600)}).encode(); err == nil {
		t.Error("oversize metadata encoded")
	}
}

// TestMetaCompatibleAcrossRevisions: a revision-1 reader reads the leading
// fields and stops, so the fields revision 2 appends must leave those bytes
// as they were; and a field a later revision appends is ignored.
func TestMetaCompatibleAcrossRevisions(t *testing.T) {
	v1, err := Meta{RelayAddr: "10.0.0.7:3000", RingHash: "abcdef"}.encode()
	if err != nil {
		t.Fatal(err)
	}
	v2, err := Meta{RelayAddr: "10.0.0.7:3000", RingHash: "abcdef", InternalAddr: "10.0.0.7:9090"}.encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(v2, v1) {
		t.Fatalf("revision 2 %q does not start with revision 1 %q: older nodes would misread it", v2, v1)
	}
	later := append(slices.Clone(v2), 3, 'n', 'e', 'w')
	if got, err := decodeMeta(later); err != nil || got.InternalAddr != "10.0.0.7:9090" {
		t.Fatalf("metadata with a field appended later: %+v %v", got, err)
	}
}

// TestInternalAddrGossiped: a member's internal port reaches the others,
// and one that advertises none is called on its relay address.
func TestInternalAddrGossiped(t *testing.T) {
	a := mustMember(t, "a", func(c *Config) { c.InternalPort = 9090 })
	b := mustMember(t, "b", joinTo(a))
	await.True(t, "b sees a and b", func() bool { return slices.Equal(b.names(), []string{"a", "b"}) })
	for _, x := range b.Members() {
		want, wantInternal := strings.Replace(x.RelayAddr, ":3000", ":9090", 1), true
		if x.Name == "b" {
			want, wantInternal = x.RelayAddr, false
		}
		if x.PeerAddr() != want || (x.InternalAddr != "") != wantInternal {
			t.Errorf("member %+v: PeerAddr %q, want %q", x, x.PeerAddr(), want)
		}
	}
}

func TestThreeMembersAndLeave(t *testing.T) {
	a := mustMember(t, "a", nil)
	b := mustMember(t, "b", joinTo(a))
	c := mustMember(t, "c", joinTo(b))
	want := []string{"a", "b", "c"}
	for _, m := range []*testMember{a, b, c} {
		await.True(t, "three members in "+m.cfg.NodeName+"'s view", func() bool { return slices.Equal(m.names(), want) })
		if err := m.Joined(); err != nil {
			t.Fatalf("%s: %v", m.cfg.NodeName, err)
		}
	}
	for _, x := range a.Members() {
		if x.RingHash != "r1" || !strings.HasSuffix(x.RelayAddr, ":3000") || strings.HasPrefix(x.RelayAddr, ":") {
			t.Fatalf("member %+v: metadata not carried", x)
		}
		if x.Local != (x.Name == "a") {
			t.Fatalf("member %+v: Local wrong", x)
		}
	}
	if err := c.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	await.True(t, "c gone from a's view", func() bool { return slices.Equal(a.names(), []string{"a", "b"}) })
}

// Events that arrive before Run (the local node's own join during New, the
// seeds' during Join) are applied when Run starts: nothing about a happens
// after b's Join, so a view without a means they were lost.
func TestEventsBeforeRunApplied(t *testing.T) {
	a := mustMember(t, "a", nil)
	b, err := newJoined(t, "b", joinTo(a))
	if err != nil {
		t.Fatal(err)
	}
	await.True(t, "b in a's view", func() bool { return slices.Equal(a.names(), []string{"a", "b"}) })
	if v := b.names(); v != nil {
		t.Fatalf("b has a view %v before Run", v)
	}
	b.run(t)
	await.True(t, "a and b in b's view once b runs", func() bool { return slices.Equal(b.names(), []string{"a", "b"}) })
}

// Run runs once, not after Close; once it has returned gossip is down: Leave
// is an error (not memberlist's panic), Close does nothing, the view stays.
func TestLifecycle(t *testing.T) {
	a := mustMember(t, "a", nil)
	await.True(t, "a's Run to apply its own join", func() bool { return slices.Equal(a.names(), []string{"a"}) })
	ended, cancel := context.WithCancel(context.Background())
	cancel() // a second Run that is not refused returns at once
	if err := a.Run(ended); err == nil {
		t.Fatal("a second Run succeeded")
	}
	a.stop() // Run returns nil
	if err := a.Leave(time.Second); err == nil {
		t.Fatal("Leave after Run returned succeeded")
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close after Run = %v", err)
	}
	if err := a.Joined(); err != nil {
		t.Fatalf("Joined after Run = %v", err)
	}
	if got := a.Members(); len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("Members after Run = %v", got)
	}

	b, err := newJoined(t, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
	}
	if err := b.Run(ended); err == nil {
		t.Fatal("Run after Close succeeded")
	}
}

func TestNotAdmitted(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	other := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210"))
	var refused atomic.Int64
	a := mustMember(t, "a", func(c *Config) {
		c.GossipKey = key
		c.Logger = countRefusals(c.Logger, &refused)
	})
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"wrong key", func(c *Config) { c.GossipKey = other }},
		{"no key", func(c *Config) { c.GossipKey = "" }},
		{"other label", func(c *Config) { c.GossipKey = key; c.Label = "other" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := refused.Load()
			m := mustMember(t, "intruder-"+strings.ReplaceAll(tt.name, " ", "-"), func(c *Config) {
				tt.mutate(c)
				joinTo(a)(c)
			})
			admitted := func() bool {
				return slices.ContainsFunc(a.list.Members(), func(n *memberlist.Node) bool { return n.Name == m.cfg.NodeName })
			}
			// a refuses the first join and the first retry (a second after).
			await.True(t, "a to refuse two join attempts (or to admit the intruder)", func() bool {
				return refused.Load() >= before+2 || admitted()
			})
			if admitted() {
				t.Fatalf("%s is in a's gossip membership", m.cfg.NodeName)
			}
			if slices.Contains(a.names(), m.cfg.NodeName) {
				t.Fatalf("%s was admitted", m.cfg.NodeName)
			}
			if m.Joined() == nil {
				t.Fatalf("%s believes it joined", m.cfg.NodeName)
			}
		})
	}
}

func TestDuplicateNameRefused(t *testing.T) {
	a := mustMember(t, "a", nil)
	_, err := newMember(t, "a", joinTo(a))
	if !errors.Is(err, ErrDuplicateName) || !strings.Contains(err.Error(), a.addr()) {
		t.Fatalf("got %v, want a duplicate-name error naming %s", err, a.addr())
	}
}

func TestJoinRetriesUntilSeedAppears(t *testing.T) {
	// Reserve an address for the seed, start the joiner first.
	probe := mustMember(t, "probe", nil)
	seedAddr := probe.addr()
	probe.stop()
	b := mustMember(t, "b", func(c *Config) { c.Join = []string{seedAddr} })
	if b.Joined() == nil {
		t.Fatal("joined a seed that is not there")
	}
	a := mustMember(t, "a", func(c *Config) { c.BindAddr = seedAddr })
	await.True(t, "b joined a", func() bool { return b.Joined() == nil && slices.Equal(a.names(), []string{"a", "b"}) })
}

func TestDNSSeeds(t *testing.T) {
	a := mustMember(t, "a", nil)
	_, port, _ := strings.Cut(a.addr(), ":")
	b := mustMember(t, "b", func(c *Config) { c.Join = []string{"dns+localhost:" + port} })
	await.True(t, "b joined through dns+", func() bool { return slices.Equal(b.names(), []string{"a", "b"}) })
}

func TestSelfSeedIsJoined(t *testing.T) {
	// The first pod of a StatefulSet resolves the headless service to itself.
	probe := mustMember(t, "probe", nil)
	addr := probe.addr()
	probe.stop()
	a := mustMember(t, "a", func(c *Config) { c.BindAddr = addr; c.Join = []string{addr} })
	if err := a.Joined(); err != nil {
		t.Fatal(err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, tt := range []struct{ key, bind, want string }{
		{"not base64!", "127.0.0.1:0", "NOTIFY_GOSSIP_KEY"},
		{base64.StdEncoding.EncodeToString([]byte("short")), "127.0.0.1:0", "NOTIFY_GOSSIP_KEY"},
		{"", "127.0.0.1:99999", "NOTIFY_GOSSIP_ADDR"},
	} {
		_, err := New(Config{NodeName: "x", BindAddr: tt.bind, GossipKey: tt.key}, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v", tt, err)
		}
	}
}

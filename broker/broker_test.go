package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// Shared semantics: every test here runs against each implementation.

// testBroker is what both implementations offer.
type testBroker interface {
	Broker
	StateStore
	PublishMany(ctx context.Context, channels []string, payload []byte) error
}

type impl struct {
	name string
	new  func(t *testing.T, reg prometheus.Registerer) testBroker
}

// Test probe settings: fast, with room for a loaded -race run.
const (
	testProbeInterval = 50 * time.Millisecond
	testProbeTimeout  = time.Second
	waitTimeout       = 10 * time.Second
)

func impls() []impl {
	return []impl{
		{"memory", func(t *testing.T, reg prometheus.Registerer) testBroker { return NewMemory(reg, HistoryConfig{}) }},
		{"redis", func(t *testing.T, reg prometheus.Registerer) testBroker {
			s := redistest.Start(t)
			return newTestRedis(t, s.Addr, reg)
		}},
	}
}

func forEachImpl(t *testing.T, f func(t *testing.T, b testBroker)) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) { f(t, im.new(t, nil)) })
	}
}

func newTestRedis(t testing.TB, addr string, reg prometheus.Registerer) *Redis {
	t.Helper()
	return newHistoryRedis(t, addr, reg, HistoryConfig{})
}

// newHistoryRedis is newTestRedis keeping history as hist says.
func newHistoryRedis(t testing.TB, addr string, reg prometheus.Registerer, hist HistoryConfig) *Redis {
	t.Helper()
	return newConfiguredRedis(t, RedisConfig{Addr: addr}, RedisOptions{Registerer: reg, History: hist})
}

// newConfiguredRedis is a broker on the topology cfg selects, with o and
// the tests' probe timings, logger and node id; closed at the end of t.
func newConfiguredRedis(t testing.TB, cfg RedisConfig, o RedisOptions) *Redis {
	t.Helper()
	top, err := cfg.Topology()
	if err != nil {
		t.Fatal(err)
	}
	o.ProbeInterval, o.ProbeTimeout = testProbeInterval, testProbeTimeout
	o.Logger, o.NodeID = testLogger(t), "test"
	r, err := NewRedisTopology(top, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type msg struct{ channel, payload string }

// recorder is a Handler that records what it receives as the channel the
// message names: Deliver's target turned back into a user's or a topic's
// channel, ControlChannel for Control. A message handed to the wrong method,
// or with the wrong target, is recorded on another channel than it was
// published on.
type recorder struct {
	t  testing.TB
	ch chan msg
}

var _ Handler = (*recorder)(nil)

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, ch: make(chan msg, 10000)}
}

func (r *recorder) Deliver(t Target, m Message) {
	channel := UserChannel(t.Name)
	if t.Topic {
		channel = TopicChannel(t.Name)
	}
	r.record(msg{channel, strings.Clone(m.Payload)}) // a view of the read buffer
}

func (r *recorder) Control(payload string) { r.record(msg{ControlChannel, payload}) }

func (r *recorder) record(m msg) {
	select {
	case r.ch <- m:
	default:
		r.t.Errorf("recorder full, dropped %s", m.channel)
	}
}

// nopHandler drops everything.
type nopHandler struct{}

func (nopHandler) Deliver(Target, Message) {}
func (nopHandler) Control(string)          {}

// run starts b.Run in a goroutine with a recorder, stopped (and waited for)
// by t.Cleanup. It does not wait for readiness.
func run(t testing.TB, b Broker) *recorder {
	t.Helper()
	rec := newRecorder(t)
	runWith(t, b, rec)
	return rec
}

// runWith starts b.Run(h) in a goroutine, stopped (and waited for) by
// t.Cleanup.
func runWith(t testing.TB, b Broker, h Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil after cancel", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %s of cancel", waitTimeout)
		}
	})
}

// runReady is run plus waiting for Ready() == nil.
func runReady(t testing.TB, b Broker) *recorder {
	t.Helper()
	rec := newRecorder(t)
	runReadyWith(t, b, rec)
	return rec
}

// runReadyWith is runWith plus waiting for Ready() == nil.
func runReadyWith(t testing.TB, b Broker, h Handler) {
	t.Helper()
	runWith(t, b, h)
	await.True(t, "Ready() == nil", func() bool { return b.Ready() == nil })
}

// expect reads exactly want from the recorder, in order.
func (r *recorder) expect(t *testing.T, want ...msg) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for i, w := range want {
		select {
		case got := <-r.ch:
			if got != w {
				t.Fatalf("message %d = %q, want %q", i, got, w)
			}
		case <-timer.C:
			t.Fatalf("timed out waiting for message %d %q", i, w)
		}
	}
}

// expectNothing checks that nothing further was recorded.
func (r *recorder) expectNothing(t *testing.T) {
	t.Helper()
	select {
	case got := <-r.ch:
		t.Fatalf("unexpected message %q", got)
	default:
	}
}

func TestPublishDelivery(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		rec := runReady(t, b)
		ctx := context.Background()
		steps := []struct {
			channel string
			payload []byte
			deliver bool
		}{
			{UserChannel("u1"), []byte("hello"), true},
			{TopicChannel("news"), []byte("topic message"), true},
			{"other:u1", []byte("not ours"), false},
			{"notify_probe:test", []byte("not a user channel"), false},
			{"notify", []byte("no colon"), false},
			{UserChannel("u1"), []byte{0xff, 0x00, 0x01}, true}, // binary survives
			{UserChannel("u1"), []byte{}, true},
			{UserChannel(""), []byte("names nobody"), true}, // the handler counts and drops it
			{TopicChannel(""), []byte("names no topic"), true},
			{TopicChannel("a:b"), []byte("colon in the name"), true},
			{ControlChannel, []byte(`{"op":"disconnect"}`), true},
			{ControlChannel + "x", []byte("not the control channel"), false},
			{UserChannel("u2"), []byte("last"), true},
		}
		var want []msg
		for _, s := range steps {
			if err := b.Publish(ctx, s.channel, s.payload); err != nil {
				t.Fatalf("Publish(%s): %v", s.channel, err)
			}
			if s.deliver {
				want = append(want, msg{s.channel, string(s.payload)})
			}
		}
		// The last message arriving after all others shows the dropped ones
		// were not delivered either.
		rec.expect(t, want...)
		rec.expectNothing(t)
	})
}

func TestPublishOrderConcurrent(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		rec := runReady(t, b)
		const publishers, each = 4, 200
		var wg sync.WaitGroup
		for p := range publishers {
			wg.Go(func() {
				for i := range each {
					if err := b.Publish(context.Background(), UserChannel(fmt.Sprint("u", p)), fmt.Append(nil, i)); err != nil {
						t.Errorf("Publish: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		next := make(map[string]int)
		timer := time.NewTimer(waitTimeout)
		defer timer.Stop()
		for range publishers * each {
			select {
			case m := <-rec.ch:
				if want := fmt.Sprint(next[m.channel]); m.payload != want {
					t.Fatalf("%s: got %s, want %s (order per publisher broken)", m.channel, m.payload, want)
				}
				next[m.channel]++
			case <-timer.C:
				t.Fatalf("timed out; received %v", next)
			}
		}
	})
}

func TestPublishMany(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		rec := runReady(t, b)
		ctx := context.Background()
		var channels []string
		var want []msg
		for i := range 500 {
			ch := UserChannel(fmt.Sprint("user", i))
			switch i % 3 {
			case 1:
				ch = TopicChannel(fmt.Sprint("topic", i))
			case 2:
				if i%5 == 0 {
					ch = fmt.Sprint("elsewhere:", i) // dropped
				}
			}
			channels = append(channels, ch)
			if matchesPatterns(ch) {
				want = append(want, msg{ch, "payload"})
			}
		}
		if err := b.PublishMany(ctx, channels, []byte("payload")); err != nil {
			t.Fatalf("PublishMany: %v", err)
		}
		if err := b.PublishMany(ctx, nil, []byte("nothing")); err != nil {
			t.Fatalf("PublishMany(nil): %v", err)
		}
		if err := b.PublishMany(ctx, []string{UserChannel("one")}, []byte("single")); err != nil {
			t.Fatalf("PublishMany(one): %v", err)
		}
		want = append(want, msg{UserChannel("one"), "single"})
		rec.expect(t, want...)
		rec.expectNothing(t)
	})
}

func TestPublishWithoutRunIsLost(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		if err := b.Publish(context.Background(), UserChannel("u"), []byte("lost")); err != nil {
			t.Fatalf("Publish without Run: %v", err)
		}
		rec := runReady(t, b)
		if err := b.Publish(context.Background(), UserChannel("u"), []byte("kept")); err != nil {
			t.Fatal(err)
		}
		rec.expect(t, msg{UserChannel("u"), "kept"})
		rec.expectNothing(t)
	})
}

func TestRunLifecycle(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		if err := b.Ready(); err == nil {
			t.Fatal("Ready() = nil before Run")
		}
		if err := b.Run(context.Background(), nil); err == nil {
			t.Fatal("Run with a nil handler succeeded")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		calls := newRecorder(t)
		go func() { done <- b.Run(ctx, calls) }()
		await.True(t, "Ready() == nil", func() bool { return b.Ready() == nil })

		// A second Run at the same time is refused.
		if err := b.Run(context.Background(), nopHandler{}); err == nil {
			t.Fatal("second concurrent Run succeeded")
		}

		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run = %v, want nil after cancel", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("Run did not return after cancel")
		}
		if err := b.Ready(); err == nil || err.Error() != "broker not running" {
			t.Fatalf("Ready() after Run = %v, want broker not running", err)
		}
		// No handler call after Run returned.
		if err := b.Publish(context.Background(), UserChannel("u"), []byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-calls.ch:
			t.Fatalf("handler called after Run returned: %s", m.channel)
		default:
		}

		// Run can be started again.
		rec := runReady(t, b)
		if err := b.Publish(context.Background(), UserChannel("again"), []byte("y")); err != nil {
			t.Fatal(err)
		}
		rec.expect(t, msg{UserChannel("again"), "y"})
	})
}

// stateOp is one step of TestState: do, then the user's state is want and
// the others' are unaffected.
type stateOp struct {
	name   string
	do     func() error
	user   string
	want   map[string]string
	others map[string]map[string]string // other users, unaffected
}

func stateOps(ctx context.Context, b testBroker) []stateOp {
	return []stateOp{
		{name: "unknown user is empty", do: func() error { return nil }, user: "nobody", want: map[string]string{}},
		{name: "set", do: func() error {
			return b.SetState(ctx, "u1", map[string]string{"a": "1", "b": "2"})
		}, user: "u1", want: map[string]string{"a": "1", "b": "2"}},
		{name: "set merges", do: func() error {
			return b.SetState(ctx, "u1", map[string]string{"b": "20", "c": "3"})
		}, user: "u1", want: map[string]string{"a": "1", "b": "20", "c": "3"}},
		{name: "set nothing is a no-op", do: func() error {
			return b.SetState(ctx, "u1", nil)
		}, user: "u1", want: map[string]string{"a": "1", "b": "20", "c": "3"}},
		{name: "other user", do: func() error {
			return b.SetState(ctx, "u2", map[string]string{"x": "unicode ✓", "empty": ""})
		}, user: "u2", want: map[string]string{"x": "unicode ✓", "empty": ""}},
		{name: "delete fields", do: func() error {
			return b.DeleteState(ctx, "u1", "a", "missing")
		}, user: "u1", want: map[string]string{"b": "20", "c": "3"},
			others: map[string]map[string]string{"u2": {"x": "unicode ✓", "empty": ""}}},
		{name: "delete the last fields", do: func() error {
			return b.DeleteState(ctx, "u1", "b", "c")
		}, user: "u1", want: map[string]string{}},
		{name: "delete all", do: func() error {
			return b.DeleteState(ctx, "u2")
		}, user: "u2", want: map[string]string{}},
		{name: "delete of an unknown user", do: func() error {
			return b.DeleteState(ctx, "nobody", "f")
		}, user: "nobody", want: map[string]string{}},
	}
}

func TestState(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		ctx := context.Background()
		for _, o := range stateOps(ctx, b) {
			if err := o.do(); err != nil {
				t.Fatalf("%s: %v", o.name, err)
			}
			got, err := b.GetState(ctx, o.user)
			if err != nil {
				t.Fatalf("%s: GetState: %v", o.name, err)
			}
			if got == nil {
				t.Fatalf("%s: GetState returned a nil map", o.name)
			}
			if !maps.Equal(got, o.want) {
				t.Fatalf("%s: GetState(%s) = %v, want %v", o.name, o.user, got, o.want)
			}
			for u, w := range o.others {
				got, err := b.GetState(ctx, u)
				if err != nil || !maps.Equal(got, w) {
					t.Fatalf("%s: GetState(%s) = %v, %v; want %v", o.name, u, got, err, w)
				}
			}
		}

		// The returned map is a copy.
		if err := b.SetState(ctx, "u3", map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
		got, _ := b.GetState(ctx, "u3")
		got["k"] = "changed"
		again, _ := b.GetState(ctx, "u3")
		if again["k"] != "v" {
			t.Fatalf("changing a returned map changed the state: %v", again)
		}
	})
}

func TestCanceledContext(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := map[string]error{
			"Publish":     b.Publish(ctx, UserChannel("u"), []byte("x")),
			"PublishMany": b.PublishMany(ctx, []string{UserChannel("u"), UserChannel("v")}, []byte("x")),
			"SetState":    b.SetState(ctx, "u", map[string]string{"a": "b"}),
			"DeleteState": b.DeleteState(ctx, "u"),
		}
		_, calls["GetState"] = b.GetState(ctx, "u")
		for _, name := range slices.Sorted(maps.Keys(calls)) {
			err := calls[name]
			if err == nil {
				t.Errorf("%s with a canceled context succeeded", name)
				continue
			}
			if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
				t.Errorf("%s = %v; want context.Canceled and not ErrUnavailable", name, err)
			}
		}
	})
}

func TestMetricsSameForBothBackends(t *testing.T) {
	names := make(map[string][]string)
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			b := im.new(t, reg)
			runReady(t, b)
			await.True(t, "notify_broker_up 1", func() bool { return gaugeValue(t, reg, "notify_broker_up") == 1 })
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				names[im.name] = append(names[im.name], mf.GetName()+" "+mf.GetType().String())
			}
			// A second broker on the same registry shares the metrics.
			_ = im.new(t, reg)
		})
	}
	if !slices.Equal(names["memory"], names["redis"]) {
		t.Fatalf("metric sets differ: memory %v, redis %v", names["memory"], names["redis"])
	}
	want := []string{
		"notify_broker_reconnects_total COUNTER", "notify_broker_subscription_lost_total COUNTER", "notify_broker_up GAUGE",
		"notify_history_appends_total COUNTER", "notify_history_function_loads_total COUNTER",
		"notify_history_read_seconds HISTOGRAM",
	}
	if !slices.Equal(names["memory"], want) {
		t.Fatalf("metrics = %v, want %v", names["memory"], want)
	}
}

func TestNilRegisterer(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		runReady(t, b) // impls() passes a nil Registerer
	})
}

// matchesPatterns tells whether Redis would deliver channel to a subscriber of
// UserPattern, TopicPattern (both "prefix*" globs) and ControlChannel.
func matchesPatterns(channel string) bool {
	return strings.HasPrefix(channel, UserPrefix) || strings.HasPrefix(channel, TopicPrefix) || channel == ControlChannel
}

func gaugeValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func BenchmarkMemoryPublish(b *testing.B) {
	m := NewMemory(nil, HistoryConfig{})
	runWith(b, m, nopHandler{})
	await.True(b, "Ready() == nil", func() bool { return m.Ready() == nil })
	ctx := context.Background()
	payload := []byte(`{"kind":"message","body":"hello"}`)
	ch := UserChannel("bench")
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Publish(ctx, ch, payload)
	}
}

package broker

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// Redis-only behaviour: outages, reconnects, the external contract.

func TestRedisExternalPublisher(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	rec := runReady(t, r)
	// Applications publish straight to Redis (DESIGN.md section 2).
	c := s.Client(t)
	ctx := context.Background()
	for _, m := range []msg{{"notify:42", "to user"}, {"notify_topic:sport", "to topic"}, {"unrelated", "x"}, {"notify:7", "end"}} {
		if err := c.Publish(ctx, m.channel, m.payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rec.expect(t, msg{"notify:42", "to user"}, msg{"notify_topic:sport", "to topic"}, msg{"notify:7", "end"})
	rec.expectNothing(t)

	// State written by applications is read back; HSET from outside merges.
	if err := c.HSet(ctx, "notify:42:state", "plan", "pro").Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.SetState(ctx, "42", map[string]string{"theme": "dark"}); err != nil {
		t.Fatal(err)
	}
	got, err := r.GetState(ctx, "42")
	if err != nil || len(got) != 2 || got["plan"] != "pro" || got["theme"] != "dark" {
		t.Fatalf("GetState = %v, %v", got, err)
	}
}

func TestRedisDownAtStart(t *testing.T) {
	s := redistest.Start(t)
	s.Stop()
	r := newTestRedis(t, s.Addr, nil) // must not need the server
	rec := run(t, r)

	// Ready explains why, with the connection error.
	await.True(t, "Ready() error naming the refused connection", func() bool {
		err := r.Ready()
		return err != nil && strings.Contains(err.Error(), "connection refused")
	})
	if err := r.Ready(); !strings.HasPrefix(err.Error(), "redis: no probe round trip") {
		t.Fatalf("Ready() = %v", err)
	}

	s.Restart() // starts the stopped server on the same port
	await.True(t, "Ready() == nil after the server came up", func() bool { return r.Ready() == nil })
	if err := r.Publish(context.Background(), UserChannel("u"), []byte("first")); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, msg{UserChannel("u"), "first"})
	if n := testutil.ToFloat64(r.metrics.reconnects); n != 0 {
		t.Fatalf("reconnects = %v after the first subscription, want 0", n)
	}
}

// backoff.wait, the reader's wait between subscriptions, ends when a probe
// publish made during it succeeds (Redis.answered); one made before it
// says nothing. The backoff is at its cap here (a delay of 1-2 s).
func TestBackoffWaitEndsWhenAProbeAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		probes bool // a probe answers every 10 ms during the wait
		want   bool // wait's result: false when ctx ended first
	}{
		{"a probe answers during the wait", true, true},
		{"only a probe answered before the wait", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answered := make(chan struct{}, 1) // Redis.answered
			answered <- struct{}{}             // before the wait
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if tc.probes {
				wg.Go(func() {
					tick := time.NewTicker(10 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
							select {
							case answered <- struct{}{}:
							default:
							}
						}
					}
				})
			}
			got := (&backoff{n: 10}).wait(ctx, answered)
			close(stop)
			wg.Wait()
			if got != tc.want {
				t.Fatalf("wait = %v, want %v", got, tc.want)
			}
		})
	}
}

// Each probe publish that succeeds signals answered; none does while Redis
// is down.
func TestProbeSignalsAnswered(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	runReady(t, r)
	received := func(within time.Duration) bool {
		select {
		case <-r.answered:
		default:
		}
		select {
		case <-r.answered:
			return true
		case <-time.After(within):
			return false
		}
	}
	if !received(20 * testProbeInterval) {
		t.Fatal("no probe answered while redis is up")
	}
	s.Stop()
	await.True(t, "Ready() != nil while redis is down", func() bool { return r.Ready() != nil })
	if received(5 * testProbeInterval) {
		t.Fatal("a probe answered while redis is down")
	}
	s.Restart()
	if !received(5 * time.Second) {
		t.Fatal("no probe answered after redis came back")
	}
}

func TestRedisStopStartMidRun(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	rec := runReady(t, r)
	ctx := context.Background()
	if err := r.Publish(ctx, UserChannel("u"), []byte("before")); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, msg{UserChannel("u"), "before"})

	s.Stop()
	await.True(t, "Ready() != nil while redis is down", func() bool { return r.Ready() != nil })
	await.True(t, "notify_broker_up 0", func() bool { return testutil.ToFloat64(r.metrics.up) == 0 })
	if err := r.Publish(ctx, UserChannel("u"), []byte("lost")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Publish while down = %v, want ErrUnavailable", err)
	}
	if n := testutil.ToFloat64(r.metrics.reconnects); n != 0 {
		t.Fatalf("reconnects = %v before the server is back, want 0", n)
	}

	s.Restart()
	await.True(t, "Ready() == nil after restart", func() bool { return r.Ready() == nil })
	await.True(t, "notify_broker_up 1", func() bool { return testutil.ToFloat64(r.metrics.up) == 1 })
	if err := r.Publish(ctx, UserChannel("u"), []byte("after")); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, msg{UserChannel("u"), "after"})
	rec.expectNothing(t)
	if n := testutil.ToFloat64(r.metrics.reconnects); n != 1 {
		t.Fatalf("reconnects = %v, want 1", n)
	}
}

func TestRedisRestartMidRun(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	rec := runReady(t, r)
	ctx := context.Background()

	for i, payload := range []string{"one", "two", "three"} {
		s.Restart()
		await.True(t, "the reconnect", func() bool { return testutil.ToFloat64(r.metrics.reconnects) == float64(i+1) })
		await.True(t, "Ready() == nil", func() bool { return r.Ready() == nil })
		if err := r.Publish(ctx, TopicChannel("t"), []byte(payload)); err != nil {
			t.Fatal(err)
		}
		rec.expect(t, msg{TopicChannel("t"), payload})
	}
	rec.expectNothing(t)
}

// A half-dead connection (no data, no RST) is found by the silence check:
// the server is frozen, then thawed. Without a fresh connection the old one
// would simply resume and count no reconnect.
func TestRedisHalfDeadConnection(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	rec := runReady(t, r)

	s.Pause()
	paused := true
	defer func() {
		if paused {
			s.Resume()
		}
	}()
	await.True(t, "Ready() != nil while redis is frozen", func() bool { return r.Ready() != nil })
	// Stay frozen past the silence limit so the reader gives up the connection.
	// Only the reader's silence check clears it while the server is frozen
	// (nothing closes the connection).
	await.True(t, "the reader to drop the silent connection", func() bool { return !r.subscribed.Load() })
	s.Resume()
	paused = false

	await.True(t, "Ready() == nil after thaw", func() bool { return r.Ready() == nil })
	if n := testutil.ToFloat64(r.metrics.reconnects); n < 1 {
		t.Fatalf("reconnects = %v, want >= 1", n)
	}
	if err := r.Publish(context.Background(), UserChannel("u"), []byte("after thaw")); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, msg{UserChannel("u"), "after thaw"})
	rec.expectNothing(t)
}

func TestRedisErrorsWrapUnavailable(t *testing.T) {
	s := redistest.Start(t)
	s.Stop()
	r := newTestRedis(t, s.Addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	calls := map[string]func() error{
		"Publish":     func() error { return r.Publish(ctx, UserChannel("u"), []byte("x")) },
		"PublishMany": func() error { return r.PublishMany(ctx, []string{UserChannel("u"), TopicChannel("t")}, []byte("x")) },
		"GetState": func() error {
			m, err := r.GetState(ctx, "u")
			if m != nil {
				t.Errorf("GetState returned %v with an error", m)
			}
			return err
		},
		"SetState":          func() error { return r.SetState(ctx, "u", map[string]string{"a": "b"}) },
		"DeleteState":       func() error { return r.DeleteState(ctx, "u") },
		"DeleteStateFields": func() error { return r.DeleteState(ctx, "u", "a") },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s = %v, want an error wrapping ErrUnavailable", name, err)
			}
			if !strings.Contains(err.Error(), "connection refused") {
				t.Errorf("%s = %v, want the cause in the message", name, err)
			}
		})
	}
}

func TestRedisCommandErrorIsNotUnavailable(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	ctx := context.Background()
	// The state key holding a string is bad data, not an outage.
	if err := s.Client(t).Set(ctx, StateKey("u"), "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := r.GetState(ctx, "u")
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("GetState of a string key = %v, want WRONGTYPE without ErrUnavailable", err)
	}
}

func TestRedisRunAfterClose(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background(), nopHandler{}); err == nil {
		t.Fatal("Run after Close succeeded")
	}
}

func TestRedisCloseEndsRun(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background(), nopHandler{}) }()
	await.True(t, "Ready() == nil", func() bool { return r.Ready() == nil })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil after Close, want an error")
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run still running after Close")
	}
}

// Run leaves no goroutine behind, whatever state the connection is in.
func TestRedisRunLeavesNoGoroutine(t *testing.T) {
	s := redistest.Start(t)
	before := runtime.NumGoroutine()
	r := newTestRedis(t, s.Addr, nil)
	for _, phase := range []string{"up", "down"} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx, nopHandler{}) }()
		if phase == "up" {
			await.True(t, "Ready() == nil", func() bool { return r.Ready() == nil })
		} else {
			await.True(t, "Ready() error", func() bool {
				err := r.Ready()
				return err != nil && strings.Contains(err.Error(), "refused")
			})
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: Run = %v", phase, err)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("%s: Run did not return", phase)
		}
		s.Stop() // the second Run starts with redis down
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// go-redis's own dial prober sleeps 1s between attempts before it
	// notices the closed client.
	await.True(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= before })
}

func TestNewRedisOptions(t *testing.T) {
	opts, _ := RedisConfig{Addr: "127.0.0.1:1"}.Options()
	tests := []struct {
		name    string
		o       RedisOptions
		wantErr bool
	}{
		{"defaults", RedisOptions{}, false},
		{"custom", RedisOptions{ProbeInterval: 10 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond}, false},
		{"interval only", RedisOptions{ProbeInterval: 2 * time.Second}, false},
		{"timeout not above interval", RedisOptions{ProbeInterval: time.Second, ProbeTimeout: time.Second}, true},
		{"negative", RedisOptions{ProbeInterval: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRedis(opts, tt.o)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewRedis err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer r.Close()
			if r.timeout <= r.interval {
				t.Fatalf("timeout %s <= interval %s", r.timeout, r.interval)
			}
			if !strings.HasPrefix(r.probeChannel, ProbePrefix) || len(r.probeChannel) == len(ProbePrefix) {
				t.Fatalf("probe channel %q", r.probeChannel)
			}
			if matchesPatterns(r.probeChannel) {
				t.Fatalf("probe channel %q matches the contract patterns", r.probeChannel)
			}
		})
	}
	if _, err := NewRedis(nil, RedisOptions{}); err == nil {
		t.Fatal("NewRedis(nil) succeeded")
	}
}

func TestBackoffBounds(t *testing.T) {
	var b backoff
	prevMax := time.Duration(0)
	for i := range 50 {
		d := b.next()
		if d < backoffMin || d > backoffMax {
			t.Fatalf("delay %d = %s, outside [%s, %s]", i, d, backoffMin, backoffMax)
		}
		prevMax = max(prevMax, d)
	}
	if prevMax < backoffMax/2 {
		t.Fatalf("backoff never grew: max %s", prevMax)
	}
	b.reset()
	if d := b.next(); d > 2*backoffMin {
		t.Fatalf("after reset delay = %s", d)
	}
}

// signalHandler sends on itself for every delivery.
type signalHandler chan struct{}

func (s signalHandler) Deliver(Target, Message) { s <- struct{}{} }
func (signalHandler) Control(string)            {}

// BenchmarkRedisPublishReceive measures the round trip publish -> Redis ->
// subscription -> handler, one message at a time.
func BenchmarkRedisPublishReceive(b *testing.B) {
	s := redistest.Start(b)
	opts, err := RedisConfig{Addr: s.Addr}.Options()
	if err != nil {
		b.Fatal(err)
	}
	r, err := NewRedis(opts, RedisOptions{Logger: slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() }) // after Run has returned: cleanups run last in, first out
	got := make(signalHandler, 1)
	runWith(b, r, got)
	await.True(b, "Ready() == nil", func() bool { return r.Ready() == nil })
	ctx := context.Background()

	payload := []byte(`{"kind":"message","body":"hello"}`)
	ch := UserChannel("bench")
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Publish(ctx, ch, payload); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}

package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// Losing a working subscription: why, what the node says, and that it comes
// back.

// tinyPubsubLimit makes Redis cut a pub/sub client as soon as 64 KiB of
// replies wait for it (32 KiB for a second): the default is 32mb 8mb 60.
const tinyPubsubLimit = "pubsub 64kb 32kb 1"

// A node that stops reading while messages keep coming is cut off by Redis
// (client-output-buffer-limit pubsub): it notices once it reads again,
// counts and logs the loss as closed_while_behind, is not ready from the
// stall until a probe made the round trip on the new subscription, and
// delivers again afterwards. What was published meanwhile is lost.
func TestRedisOutputBufferCutOff(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.ConfigSet(ctx, "client-output-buffer-limit", tinyPubsubLimit).Err(); err != nil {
		t.Fatal(err)
	}
	r, logs := newLoggedRedis(t, s.Addr)
	g := newGateHandler(t)
	runWith(t, r, g)
	t.Cleanup(g.open) // before runWith's cleanup waits for Run: cleanups run last in, first out
	await.True(t, "Ready() == nil", func() bool { return r.Ready() == nil })

	// Stall the reader, then flood until Redis has cut it.
	if err := r.Publish(ctx, UserChannel("block"), []byte("stall")); err != nil {
		t.Fatal(err)
	}
	g.waitBlocked(t)
	published := floodUntilCut(t, s, c)
	cutAt := time.Now()
	await.True(t, "Ready() != nil while the reader is stalled", func() bool { return r.Ready() != nil })
	// Every probe left in the backlog is then older than the probe timeout:
	// none may make the node look ready while it reads up to the cut.
	await.True(t, "the stall to outlast the probe timeout after the cut", func() bool { return time.Since(cutAt) > r.timeout })
	if n := lostTotal(r); n != 0 {
		t.Fatalf("subscription losses = %v before the reader read again, want 0", n)
	}

	w := watchReady(r)
	g.open()
	await.True(t, "the loss counted as closed_while_behind", func() bool {
		return testutil.ToFloat64(r.metrics.lost.WithLabelValues(lostClosedWhileBehind)) == 1
	})
	await.True(t, "Ready() == nil after the resubscribe", func() bool { return r.Ready() == nil })
	w.stop()
	w.checkGap(t, "client-output-buffer-limit pubsub")
	if n := lostTotal(r); n != 1 {
		t.Fatalf("subscription losses = %v, want 1", n)
	}
	if n := testutil.ToFloat64(r.metrics.reconnects); n != 1 {
		t.Fatalf("reconnects = %v, want 1", n)
	}
	checkCutLogged(t, logs.String())

	if err := r.Publish(ctx, UserChannel("after"), []byte("back")); err != nil {
		t.Fatal(err)
	}
	g.rec.expect(t, msg{UserChannel("after"), "back"})
	delivered := g.flooded.Load()
	if delivered >= published {
		t.Fatalf("all %d flood messages arrived: Redis cut nothing", published)
	}
	t.Logf("%d of %d flood messages reached the handler; ready history: %q", delivered, published, w.seen)
}

// floodUntilCut publishes on c until Redis has closed every pub/sub client
// for its output buffer, and returns how many messages it published.
func floodUntilCut(t *testing.T, s *redistest.Server, c *redis.Client) int64 {
	t.Helper()
	f := startFlood(t, c)
	await.True(t, "redis to close the stalled subscriber", func() bool {
		clients, err := c.Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			t.Fatalf("CLIENT LIST: %v", err)
		}
		return strings.TrimSpace(clients) == ""
	})
	n := f.stop()
	if log := s.Log(); !strings.Contains(log, "output buffer limits") {
		t.Fatalf("the server log does not name the output buffer limit:\n%s", log)
	}
	return n
}

// checkCutLogged checks the one WARN line a cut-off gives.
func checkCutLogged(t *testing.T, logs string) {
	t.Helper()
	var lines []string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "reason="+lostClosedWhileBehind) {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d WARN lines about the cut, want 1:\n%s", len(lines), logs)
	}
	for _, want := range []string{"client-output-buffer-limit pubsub", "behind=", "err="} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("the WARN line lacks %q: %s", want, lines[0])
		}
	}
}

// A handler that stalls longer than the probe timeout, with nothing cut,
// makes the node unready meanwhile but costs no subscription: the time the
// reader spent in the handler is not silence of the connection.
func TestRedisSlowHandlerIsNotSilence(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	g := newGateHandler(t)
	runWith(t, r, g)
	t.Cleanup(g.open)
	await.True(t, "Ready() == nil", func() bool { return r.Ready() == nil })

	ctx := context.Background()
	if err := r.Publish(ctx, UserChannel("block"), []byte("stall")); err != nil {
		t.Fatal(err)
	}
	g.waitBlocked(t)
	await.True(t, "Ready() != nil while the reader is stalled", func() bool { return r.Ready() != nil })
	// Beyond the silence limit counted from the last message read.
	await.True(t, "the stall to outlast the probe timeout", func() bool {
		return time.Since(time.Unix(0, r.lastProbe.Load())) > 2*r.timeout
	})
	g.open()
	await.True(t, "Ready() == nil after the stall", func() bool { return r.Ready() == nil })
	if err := r.Publish(ctx, UserChannel("after"), []byte("still here")); err != nil {
		t.Fatal(err)
	}
	g.rec.expect(t, msg{UserChannel("after"), "still here"})
	if n, re := lostTotal(r), testutil.ToFloat64(r.metrics.reconnects); n != 0 || re != 0 {
		t.Fatalf("losses %v, reconnects %v after a slow handler, want 0, 0", n, re)
	}
}

// Each way of losing a working subscription is counted under its reason,
// and the node resubscribes and delivers afterwards.
func TestRedisSubscriptionLostReason(t *testing.T) {
	tests := []struct {
		name string
		lose func(t *testing.T, s *redistest.Server, r *Redis)
		want string
	}{
		{"client kill", func(t *testing.T, s *redistest.Server, _ *Redis) {
			err := s.Client(t).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err()
			if err != nil {
				t.Fatal(err)
			}
		}, lostClosedByServer},
		{"restart", func(t *testing.T, s *redistest.Server, _ *Redis) { s.Restart() }, lostClosedByServer},
		{"frozen server", func(t *testing.T, s *redistest.Server, r *Redis) {
			s.Pause()
			defer s.Resume()
			await.True(t, "the reader to drop the silent connection", func() bool { return !r.subscribed.Load() })
		}, lostTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := redistest.Start(t)
			r := newTestRedis(t, s.Addr, nil)
			rec := runReady(t, r)
			tt.lose(t, s, r)
			await.True(t, "the reconnect", func() bool { return testutil.ToFloat64(r.metrics.reconnects) == 1 })
			if n := testutil.ToFloat64(r.metrics.lost.WithLabelValues(tt.want)); n != 1 || lostTotal(r) != 1 {
				t.Fatalf("losses: %s %v, all %v; want 1 and 1", tt.want, n, lostTotal(r))
			}
			await.True(t, "Ready() == nil", func() bool { return r.Ready() == nil })
			if err := r.Publish(context.Background(), UserChannel("u"), []byte("after")); err != nil {
				t.Fatal(err)
			}
			rec.expect(t, msg{UserChannel("u"), "after"})
		})
	}
}

func TestLossReason(t *testing.T) {
	const limit = time.Second
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	tests := []struct {
		name   string
		err    error
		behind time.Duration
		want   string
	}{
		{"eof, keeping up", io.EOF, 100 * time.Millisecond, lostClosedByServer},
		{"eof, behind", io.EOF, 2 * limit, lostClosedWhileBehind},
		{"eof at the limit", io.EOF, limit, lostClosedByServer},
		{"cut within a reply, behind", fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), 2 * limit, lostClosedWhileBehind},
		{"reset, keeping up", reset, 0, lostClosedByServer},
		{"reset, behind", reset, 5 * limit, lostClosedWhileBehind},
		{"silence", fmt.Errorf("%w for 3s", errSilent), 5 * limit, lostTimeout},
		{"protocol error, behind", errors.New("redis: can't parse reply"), 5 * limit, lostError},
		{"pool closed", redis.ErrClosed, 0, lostError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lossReason(tt.err, tt.behind, limit); got != tt.want {
				t.Fatalf("lossReason(%v, %s) = %q, want %q", tt.err, tt.behind, got, tt.want)
			}
		})
	}
}

// lostTotal sums the subscription losses over every reason.
func lostTotal(r *Redis) float64 {
	var n float64
	for _, reason := range lostReasons {
		n += testutil.ToFloat64(r.metrics.lost.WithLabelValues(reason))
	}
	return n
}

// gateHandler records like a recorder, except that a message for user
// "block" stalls the reader (nothing is read meanwhile, as on a node too
// slow for its traffic) until open, and messages for user "flood" are only
// counted.
type gateHandler struct {
	rec      *recorder
	blocked  chan struct{} // a send when a "block" message starts waiting
	release  chan struct{} // closed by open
	openOnce sync.Once
	flooded  atomic.Int64
}

func newGateHandler(t testing.TB) *gateHandler {
	return &gateHandler{rec: newRecorder(t), blocked: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *gateHandler) Deliver(t Target, m Message) {
	switch t.Name {
	case "block":
		g.blocked <- struct{}{}
		<-g.release
	case "flood":
		g.flooded.Add(1)
	default:
		g.rec.Deliver(t, m)
	}
}

func (g *gateHandler) Control(payload string) { g.rec.Control(payload) }

// open lets the reader go on, now and for every later "block" message.
func (g *gateHandler) open() { g.openOnce.Do(func() { close(g.release) }) }

func (g *gateHandler) waitBlocked(t *testing.T) {
	t.Helper()
	select {
	case <-g.blocked:
	case <-time.After(waitTimeout):
		t.Fatal("the handler was never handed the blocking message")
	}
}

// flood publishes 1 KiB messages for user "flood", pipelined, until stopped.
type flood struct {
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	published atomic.Int64
}

// startFlood starts publishing on c; t.Cleanup stops it if the test does not.
func startFlood(t *testing.T, c *redis.Client) *flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &flood{cancel: cancel}
	payload := strings.Repeat("x", 1024)
	f.wg.Go(func() {
		for ctx.Err() == nil {
			pipe := c.Pipeline()
			for range 100 {
				pipe.Publish(ctx, UserChannel("flood"), payload)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				if ctx.Err() == nil {
					t.Errorf("flood: %v", err)
				}
				return
			}
			f.published.Add(100)
		}
	})
	t.Cleanup(func() { f.stop() })
	return f
}

// stop ends the flood, waits for it and returns how many messages it
// published. A second stop returns the same.
func (f *flood) stop() int64 {
	f.cancel()
	f.wg.Wait()
	return f.published.Load()
}

// readyWatch samples Ready every millisecond from its own goroutine, and
// once more at stop, and keeps every change: "" for nil, else the error. A sampler rather
// than await: it must see a state that lasts about a backoff (100 ms).
type readyWatch struct {
	stop func()
	mu   sync.Mutex
	seen []string
}

func watchReady(r *Redis) *readyWatch {
	w := &readyWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			w.sample(r)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	w.stop = func() {
		cancel()
		wg.Wait()
		w.sample(r) // the state the caller saw last, which the ticker may have missed
	}
	return w
}

var durations = regexp.MustCompile(`(\d+(\.\d+)?(ns|µs|ms|s|m|h))+`)

func (w *readyWatch) sample(r *Redis) {
	got := ""
	if err := r.Ready(); err != nil {
		got = durations.ReplaceAllString(err.Error(), "…") // one entry per state, not per sample
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.seen); n == 0 || w.seen[n-1] != got {
		w.seen = append(w.seen, got)
	}
}

// checkGap checks, once stopped, that Ready failed from the first sample
// until it reported an error containing cause, and was nil only after that,
// and at the end.
func (w *readyWatch) checkGap(t *testing.T, cause string) {
	t.Helper()
	if len(w.seen) == 0 || w.seen[len(w.seen)-1] != "" {
		t.Fatalf("Ready() was not nil at the end: %q", w.seen)
	}
	for _, s := range w.seen {
		switch {
		case s == "":
			t.Fatalf("Ready() was nil before it reported the cause %q: %q", cause, w.seen)
		case strings.Contains(s, cause):
			return
		}
	}
}

// newLoggedRedis is newTestRedis logging to a buffer as well.
func newLoggedRedis(t *testing.T, addr string) (*Redis, *syncBuffer) {
	t.Helper()
	opts, err := RedisConfig{Addr: addr}.Options()
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), buf), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := NewRedis(opts, RedisOptions{ProbeInterval: testProbeInterval, ProbeTimeout: testProbeTimeout, Logger: log, NodeID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, buf
}

// syncBuffer is a bytes.Buffer for several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// Redis-only history behaviour: the library as applications call it, the
// keys it writes, and what happens when Redis loses data or the library.

// cli runs the real redis-cli against addr and returns its output without
// the trailing newline.
func cli(t testing.TB, addr string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not installed; make test installs redis-server, which has it")
	}
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(bin, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v: %s", args, err, out)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// loads is how many times r loaded the library.
func loads(r *Redis) int { return int(testutil.ToFloat64(r.metrics.functionLoads)) }

// runLoaded runs r and waits until Run has loaded the library.
func runLoaded(t *testing.T, r *Redis) *historyRecorder {
	t.Helper()
	rec := runHistory(t, r)
	await.True(t, "the library loaded by Run", func() bool { return loads(r) >= 1 })
	return rec
}

func TestRedisFCallFromCLI(t *testing.T) {
	s := redistest.Start(t)
	r := newHistoryRedis(t, s.Addr, nil, HistoryConfig{Size: 3, TTL: time.Hour})
	rec := runLoaded(t, r)

	c1, err := ParseCursor(cli(t, s.Addr, "FCALL", "notify_publish", "1", "notify:42", "hello world"))
	if err != nil || c1.Seq != 1 {
		t.Fatalf("FCALL notify_publish returned cursor %v, %v; want seq 1", c1, err)
	}
	rec.expect(t, delivery{user("42"), Message{Payload: "hello world", Cursor: c1}})
	c2, err := ParseCursor(cli(t, s.Addr, "FCALL", "notify_publish", "1", "notify_topic:news", "goal", "score"))
	if err != nil || c2.Seq != 1 {
		t.Fatalf("FCALL on a topic returned %v, %v", c2, err)
	}
	rec.expect(t, delivery{topic("news"), Message{Payload: "goal", Cursor: c2, Event: "score"}})

	// A plain PUBLISH stays verbatim, without a cursor and out of history.
	if n := cli(t, s.Addr, "PUBLISH", "notify:42", "plain"); n != "1" {
		t.Fatalf("PUBLISH reached %s subscribers", n)
	}
	rec.expect(t, delivery{user("42"), Message{Payload: "plain"}})

	// The baked defaults apply without maxlen and ttl: size 3 of the node.
	for i := range 4 {
		cli(t, s.Addr, "FCALL", "notify_publish", "1", "notify:42", fmt.Sprint("more", i))
		rec.next(t)
	}
	if n := cli(t, s.Addr, "XLEN", "{notify:42}:history"); n != "3" {
		t.Fatalf("XLEN = %s after 5 appends with the baked size 3", n)
	}
	hr := mustRead(t, r, user("42"), c1)
	if hr.Recovered || len(hr.Entries) != 3 || hr.Newest != (Cursor{c1.Epoch, 5}) {
		t.Fatalf("Read(first cursor) = %+v", hr)
	}
	if v := cli(t, s.Addr, "FCALL", "notify_version", "0"); v != "2\n3\n3600000" {
		t.Fatalf("notify_version = %q, want version 2, size 3, ttl 3600000", v)
	}

	// Keys that are not a user's or a topic's channel are refused, clearly.
	for _, args := range [][]string{
		{"FCALL", "notify_publish", "1", "other:42", "x"},
		{"FCALL", "notify_publish", "1", "notify:", "x"},
		{"FCALL", "notify_publish", "1", "notify:42", "x", "", "0", "1000"}, // maxlen 0
		{"FCALL", "notify_publish", "1", "notify:42"},
	} {
		if out := cli(t, s.Addr, args...); !strings.HasPrefix(out, "ERR notify: ") {
			t.Errorf("%v answered %q, want an ERR notify: refusal", args, out)
		}
	}
	rec.expectNothing(t)
}

// The keys: hash-tagged by the channel, the stream exactly bounded, stream
// and epoch with the TTL, the state hash untouched.
func TestRedisHistoryKeys(t *testing.T) {
	s := redistest.Start(t)
	const ttl = time.Hour
	r := newHistoryRedis(t, s.Addr, nil, HistoryConfig{Size: 100, TTL: ttl})
	c := s.Client(t)
	ctx := context.Background()
	if err := c.HSet(ctx, "notify:42:state", "plan", "pro").Err(); err != nil {
		t.Fatal(err)
	}
	var last Cursor
	for i := range 150 {
		last = mustAppend(t, r, fmt.Sprint(i), "", user("42"))[0]
	}
	if n := c.XLen(ctx, "{notify:42}:history").Val(); n != 100 {
		t.Fatalf("XLEN = %d, want exactly 100 (MAXLEN without ~)", n)
	}
	ids := c.XRange(ctx, "{notify:42}:history", "-", "+").Val()
	if ids[0].ID != "0-51" || ids[99].ID != "0-150" || ids[99].Values["p"] != "149" {
		t.Fatalf("stream runs %s..%s %v, want 0-51..0-150", ids[0].ID, ids[99].ID, ids[99].Values)
	}
	if e := c.Get(ctx, "{notify:42}:epoch").Val(); e != last.Epoch {
		t.Fatalf("epoch key %q, cursor %v", e, last)
	}
	for _, k := range []string{"{notify:42}:history", "{notify:42}:epoch"} {
		if d := c.PTTL(ctx, k).Val(); d <= 0 || d > ttl {
			t.Errorf("PTTL %s = %s, want (0, %s]", k, d, ttl)
		}
	}
	if d := c.PTTL(ctx, "notify:42:state").Val(); d != -1 {
		t.Errorf("the state hash got a TTL: %s", d)
	}
	if st := c.HGetAll(ctx, "notify:42:state").Val(); len(st) != 1 || st["plan"] != "pro" {
		t.Errorf("state = %v", st)
	}
	received(t, r, "42", last)
	claim(t, r, "42", Cursor{last.Epoch, last.Seq + 1}, time.Minute)
	want := []string{"notify:42:state", "{notify:42}:epoch", "{notify:42}:handoffs", "{notify:42}:history", "{notify:42}:received"}
	keys := c.Keys(ctx, "*").Val()
	slices.Sort(keys)
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	if d := c.PTTL(ctx, "{notify:42}:received").Val(); d <= ttl-time.Minute || d > ttl {
		t.Errorf("PTTL received = %s, want the history TTL %s (above ReceivedTTL)", d, ttl)
	}
}

// With a short TTL the stream and its epoch both expire after one append:
// nothing is left behind.
func TestRedisHistoryExpiry(t *testing.T) {
	s := redistest.Start(t)
	const ttl = 300 * time.Millisecond
	r := newHistoryRedis(t, s.Addr, nil, HistoryConfig{Size: 10, TTL: ttl})
	c := s.Client(t)
	ctx := context.Background()
	mustAppend(t, r, "once", "", user("x"), topic("x"))
	for _, k := range []string{"{notify:x}:history", "{notify:x}:epoch", "{notify_topic:x}:history", "{notify_topic:x}:epoch"} {
		if d := c.PTTL(ctx, k).Val(); d <= 0 || d > ttl {
			t.Errorf("PTTL %s = %s after one append, want (0, %s]", k, d, ttl)
		}
	}
	await.True(t, "every key to expire", func() bool { return c.DBSize(ctx).Val() == 0 })
}

// identityStep is what happens to Redis between two appends, and what the
// second append and a Read from the first cursor then show.
type identityStep struct {
	name      string
	do        func(t *testing.T, s *redistest.Server, r *Redis)
	sameEpoch bool // the history survived
}

func identitySteps() []identityStep {
	return []identityStep{
		{"FLUSHALL", func(t *testing.T, s *redistest.Server, r *Redis) {
			cli(t, s.Addr, "FLUSHALL") // also drops the library's data, not the library
		}, false},
		{"FUNCTION FLUSH", func(t *testing.T, s *redistest.Server, r *Redis) {
			cli(t, s.Addr, "FUNCTION", "FLUSH") // the next call reloads
		}, true},
		{"restart", func(t *testing.T, s *redistest.Server, r *Redis) {
			before := testutil.ToFloat64(r.metrics.reconnects)
			s.Restart()
			// Ready() alone may still answer from the old server's last
			// probe, and a load counted now may be the one kicked by the
			// first subscription: wait for the resubscribe itself.
			await.True(t, "resubscribed to the restarted server", func() bool {
				return testutil.ToFloat64(r.metrics.reconnects) > before
			})
			// Resubscribed, Run loads the library again by itself: an
			// application's FCALL works before the node called anything.
			c := s.Client(t)
			await.True(t, "notify_version on the restarted server", func() bool {
				v, err := c.FCall(context.Background(), FunctionVersion, nil).Int64Slice()
				return err == nil && len(v) > 0 && v[0] == LibraryVersion
			})
		}, false},
	}
}

func TestRedisHistoryIdentity(t *testing.T) {
	for _, step := range identitySteps() {
		t.Run(step.name, func(t *testing.T) {
			s := redistest.Start(t)
			r := newHistoryRedis(t, s.Addr, nil, testHistory)
			rec := runLoaded(t, r)
			c1 := mustAppend(t, r, "before", "", user("i"))[0]
			rec.next(t)
			step.do(t, s, r)
			await.True(t, "Ready() == nil", func() bool { return r.Ready() == nil })
			c2 := mustAppend(t, r, "after", "", user("i"), topic("i"))
			if step.sameEpoch != (c2[0] == Cursor{c1.Epoch, 2}) || !step.sameEpoch && (c2[0].Seq != 1 || c2[0].Epoch == c1.Epoch) {
				t.Fatalf("cursor after %s: %v after %v (history kept: %v)", step.name, c2[0], c1, step.sameEpoch)
			}
			rec.expect(t, delivery{user("i"), Message{Payload: "after", Cursor: c2[0]}},
				delivery{topic("i"), Message{Payload: "after", Cursor: c2[1]}})
			hr := mustRead(t, r, user("i"), c1)
			if hr.Recovered != step.sameEpoch || !slices.Equal(hr.Entries, []Entry{{c2[0], "after", ""}}) || hr.Newest != c2[0] {
				t.Fatalf("Read(c1) after %s = %+v", step.name, hr)
			}
		})
	}
}

// After FUNCTION FLUSH a burst of calls loads the library once.
func TestRedisReloadOnce(t *testing.T) {
	s := redistest.Start(t)
	r := newHistoryRedis(t, s.Addr, nil, testHistory) // no Run: only calls load
	mustAppend(t, r, "x", "", user("a"))
	if n := loads(r); n != 1 {
		t.Fatalf("%d loads after the first call, want 1", n)
	}
	cli(t, s.Addr, "FUNCTION", "FLUSH")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			targets := []Target{user(fmt.Sprint("u", i)), topic("t"), user("a")}
			if _, err := r.Append(context.Background(), targets, []byte("x"), ""); err != nil {
				t.Errorf("Append after FUNCTION FLUSH: %v", err)
			}
			if _, err := r.Read(context.Background(), user("a"), Cursor{}); err != nil {
				t.Errorf("Read after FUNCTION FLUSH: %v", err)
			}
		})
	}
	wg.Wait()
	if n := loads(r); n != 2 {
		t.Fatalf("%d loads after a burst of calls, want 2", n)
	}
	if hr := mustRead(t, r, user("a"), Cursor{}); len(hr.Entries) != 9 || hr.Newest.Seq != 9 {
		t.Fatalf("user a's stream: %+v, want 9 entries (each appended once)", hr)
	}
}

func TestRedisHistoryUnavailable(t *testing.T) {
	s := redistest.Start(t)
	s.Stop()
	r := newHistoryRedis(t, s.Addr, nil, testHistory)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c := Cursor{"e", 1}
	_, errOne := r.Append(ctx, []Target{user("u")}, []byte("x"), "")
	_, errMany := r.Append(ctx, []Target{user("u"), topic("t")}, []byte("x"), "")
	_, errRead := r.Read(ctx, user("u"), c)
	_, errClaim := r.Claim(ctx, "u", c, time.Minute)
	for name, err := range map[string]error{
		"Append": errOne, "Append many": errMany, "Read": errRead, "Received": r.Received(ctx, "u", c), "Claim": errClaim,
	} {
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s with redis down = %v, want ErrUnavailable with the cause", name, err)
		}
	}
}

// notify_read, the library's read for applications, answers what Read
// answers (Read itself does plain reads in a MULTI).
func TestRedisNotifyRead(t *testing.T) {
	s := redistest.Start(t)
	r := newHistoryRedis(t, s.Addr, nil, HistoryConfig{Size: 3, TTL: time.Hour})
	cs := appendTrimmed(t, r)
	c := s.Client(t)
	for _, tt := range trimCases(cs) {
		var args []any
		if !tt.since.IsZero() {
			args = []any{tt.since.Epoch, fmt.Sprint(tt.since.Seq)}
		}
		res, err := c.FCallRO(context.Background(), FunctionRead, []string{"notify:t"}, args...).Slice()
		if err != nil {
			t.Fatalf("%s: FCALL_RO notify_read: %v", tt.name, err)
		}
		hr, err := parseRead(res, tt.since)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		checkTrimCase(t, tt, hr, cs)
	}
	for _, ch := range []string{"notify:nobody", "notify_topic:none"} {
		if res, err := c.FCallRO(context.Background(), FunctionRead, []string{ch}).Slice(); err != nil || len(res) != 3 || res[0] != "" {
			t.Errorf("notify_read of an absent stream = %v, %v", res, err)
		}
	}
}

// parseRead reads notify_read's reply: {epoch, first, last, (seq, payload,
// event)...}.
func parseRead(res []any, since Cursor) (HistoryRead, error) {
	if len(res) < 3 || (len(res)-3)%3 != 0 {
		return HistoryRead{}, fmt.Errorf("%s returned %d values", FunctionRead, len(res))
	}
	str := make([]string, len(res))
	for i, v := range res {
		s, ok := v.(string)
		if !ok {
			return HistoryRead{}, fmt.Errorf("%s returned a %T", FunctionRead, v)
		}
		str[i] = s
	}
	epoch := str[0]
	if epoch == "" || str[1] == "" {
		return HistoryRead{}, nil // no stream, or an empty one
	}
	first, err1 := strconv.ParseUint(str[1], 10, 64)
	last, err2 := strconv.ParseUint(str[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return HistoryRead{}, fmt.Errorf("%s returned bad bounds: %w", FunctionRead, err)
	}
	hr := HistoryRead{
		Newest:    Cursor{Epoch: epoch, Seq: last},
		Recovered: recoveredFrom(since, epoch, first, last),
	}
	if n := (len(str) - 3) / 3; n > 0 {
		hr.Entries = make([]Entry, 0, n)
	}
	for i := 3; i < len(str); i += 3 {
		seq, err := strconv.ParseUint(str[i], 10, 64)
		if err != nil {
			return HistoryRead{}, fmt.Errorf("%s returned a bad id: %w", FunctionRead, err)
		}
		hr.Entries = append(hr.Entries, Entry{Cursor: Cursor{Epoch: epoch, Seq: seq}, Payload: str[i+1], Event: str[i+2]})
	}
	return hr, nil
}

// History off: nothing is loaded into Redis.
func TestRedisHistoryOffLoadsNothing(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	runReady(t, r)
	if _, err := r.Append(context.Background(), []Target{user("u")}, []byte("x"), ""); !errors.Is(err, ErrHistoryOff) {
		t.Fatalf("Append = %v", err)
	}
	if out := cli(t, s.Addr, "FUNCTION", "LIST"); out != "" || loads(r) != 0 {
		t.Fatalf("FUNCTION LIST = %q, %d loads; want nothing loaded", out, loads(r))
	}
}

func TestNewRedisHistoryOptions(t *testing.T) {
	opts, _ := RedisConfig{Addr: "127.0.0.1:1"}.Options()
	for _, h := range []HistoryConfig{{Size: -1}, {Size: 100001, TTL: time.Minute}, {Size: 10}, {Size: 10, TTL: time.Microsecond}} {
		if r, err := NewRedis(opts, RedisOptions{History: h}); err == nil {
			_ = r.Close()
			t.Errorf("NewRedis with history %+v succeeded", h)
		}
	}
	// The library is stamped and carries the settings.
	lib := Library(HistoryConfig{Size: 7, TTL: 90 * time.Second})
	for _, want := range []string{"#!lua name=notify\n-- notify history library v2\n", "local SIZE = 7\n", "local TTL_MS = 90000\n"} {
		if !strings.Contains(lib, want) {
			t.Errorf("library lacks %q", want)
		}
	}
}

// benchRedis is a Redis broker for benchmarks, quiet below warnings.
func benchRedis(b *testing.B, hist HistoryConfig) *Redis {
	s := redistest.Start(b)
	opts, err := RedisConfig{Addr: s.Addr}.Options()
	if err != nil {
		b.Fatal(err)
	}
	r, err := NewRedis(opts, RedisOptions{
		Logger:  slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		History: hist,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() }) // after Run has returned: cleanups run last in, first out
	return r
}

// BenchmarkRedisAppendReceive is BenchmarkRedisPublishReceive with history:
// FCALL notify_publish (append, trim, TTL, publish) -> subscription ->
// handler, one message at a time.
func BenchmarkRedisAppendReceive(b *testing.B) {
	r := benchRedis(b, HistoryConfig{Size: 100, TTL: 2 * time.Minute})
	got := make(signalHandler, 1)
	runWith(b, r, got)
	await.True(b, "Ready() == nil", func() bool { return r.Ready() == nil })
	ctx := context.Background()
	payload := []byte(`{"kind":"message","body":"hello"}`)
	targets := []Target{user("bench")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Append(ctx, targets, payload, ""); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}

// BenchmarkRedisCall compares one call's round trip, without waiting for
// the delivery: PUBLISH, FCALL notify_publish, and both over 10 targets
// (PublishMany, Append pipelined).
func BenchmarkRedisCall(b *testing.B) {
	r := benchRedis(b, HistoryConfig{Size: 100, TTL: 2 * time.Minute})
	ctx := context.Background()
	payload := []byte(`{"kind":"message","body":"hello"}`)
	var targets []Target
	var channels []string
	for i := range 10 {
		targets = append(targets, user(fmt.Sprint("bench", i)))
		channels = append(channels, UserChannel(fmt.Sprint("bench", i)))
	}
	for range 100 { // what read100 reads: a full history
		if _, err := r.Append(ctx, []Target{user("read")}, payload, ""); err != nil {
			b.Fatal(err)
		}
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"publish", func() error { return r.Publish(ctx, channels[0], payload) }},
		{"append", func() error { _, err := r.Append(ctx, targets[:1], payload, ""); return err }},
		{"publish10", func() error { return r.PublishMany(ctx, channels, payload) }},
		{"append10", func() error { _, err := r.Append(ctx, targets, payload, ""); return err }},
		{"read100", func() error { _, err := r.Read(ctx, user("read"), Cursor{}); return err }},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.call(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMemoryAppend(b *testing.B) {
	m := NewMemory(nil, HistoryConfig{Size: 100, TTL: 2 * time.Minute})
	runWith(b, m, nopHandler{})
	await.True(b, "Ready() == nil", func() bool { return m.Ready() == nil })
	ctx := context.Background()
	payload := []byte(`{"kind":"message","body":"hello"}`)
	targets := []Target{user("bench")}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = m.Append(ctx, targets, payload, "")
	}
}

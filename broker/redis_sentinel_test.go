package broker

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// The broker on Redis Sentinel and on a Redis Cluster, through go-redis's
// FailoverClient and ClusterClient, on real servers.

// newTopologyRedis is newHistoryRedis on the topology cfg selects.
func newTopologyRedis(t testing.TB, cfg RedisConfig, hist HistoryConfig) *Redis {
	t.Helper()
	return newConfiguredRedis(t, cfg, RedisOptions{History: hist})
}

// sentinelConfig is the broker's configuration for st.
func sentinelConfig(st *redistest.Sentinel) RedisConfig {
	return RedisConfig{SentinelAddrs: st.Addrs(), SentinelMaster: redistest.SentinelMaster}
}

// failoverResume bounds how long delivery may stop during a forced failover.
const failoverResume = 5 * time.Second

func TestRedisSentinelFailover(t *testing.T) {
	st := redistest.StartSentinel(t)
	r := newTopologyRedis(t, sentinelConfig(st), HistoryConfig{Size: 10, TTL: time.Hour})
	rec := &timedRecorder{t: t, ch: make(chan arrival, 10000)}
	runReadyWith(t, r, rec)
	await.True(t, "the library loaded by Run", func() bool { return loads(r) >= 1 })
	ctx := context.Background()

	// An application publishing through its own FailoverClient, as one
	// that follows the master would.
	app := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.SentinelMaster, SentinelAddrs: st.Addrs()})
	t.Cleanup(func() { _ = app.Close() })
	if err := app.Publish(ctx, UserChannel("u"), "before").Err(); err != nil {
		t.Fatal(err)
	}
	if a := rec.next(t); a.payload != "before" {
		t.Fatalf("delivery %+v, want before", a)
	}

	p := startPublishing(t, app, UserChannel("u"))
	failoverAt := time.Now()
	next := st.Failover()
	t.Logf("failover to %s took %s", next, time.Since(failoverAt).Round(time.Millisecond))
	// Delivery resumes: a message published after the new master took
	// over arrives, and no pause between two deliveries was longer than
	// failoverResume.
	after := p.published()
	gap := p.awaitDelivered(t, rec, after)
	p.stop()
	t.Logf("longest pause between deliveries across the failover: %s", gap.Round(time.Millisecond))
	if gap > failoverResume {
		t.Fatalf("delivery paused for %s, want at most %s", gap, failoverResume)
	}
	await.True(t, "Ready() == nil after the failover", func() bool { return r.Ready() == nil })
	if !r.running.Load() {
		t.Fatal("Run ended during the failover")
	}

	checkHistoryOn(t, r, user("after-failover"))
	// A new master without the library (flushed, or promoted from a replica
	// that never had it) gets it again on the first call.
	before := loads(r)
	if err := st.Server(next).Client(t).FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	checkHistoryOn(t, r, user("after-flush"))
	if loads(r) != before+1 {
		t.Fatalf("loads = %d after FUNCTION FLUSH, want %d", loads(r), before+1)
	}
}

// checkHistoryOn appends to t's history and reads it back.
func checkHistoryOn(tb testing.TB, r *Redis, t Target) {
	tb.Helper()
	ctx := context.Background()
	cs, err := r.Append(ctx, []Target{t}, []byte("kept"), "")
	if err != nil {
		tb.Fatalf("Append to %v: %v", t, err)
	}
	hr, err := r.Read(ctx, t, Cursor{})
	if err != nil || len(hr.Entries) != 1 || hr.Entries[0].Cursor != cs[0] || hr.Entries[0].Payload != "kept" {
		tb.Fatalf("Read of %v = %+v, %v; want the entry %v", t, hr, err, cs[0])
	}
}

// publisher publishes 1, 2, 3, ... on one channel every 10ms until stopped,
// ignoring errors (Redis is failing over).
type publisher struct {
	cancel  context.CancelFunc
	started time.Time
	wg      sync.WaitGroup
	mu      sync.Mutex
	last    int // the last payload published successfully
}

func startPublishing(t testing.TB, c redis.UniversalClient, channel string) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{cancel: cancel, started: time.Now()}
	p.wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			pctx, done := context.WithTimeout(ctx, 500*time.Millisecond)
			err := c.Publish(pctx, channel, strconv.Itoa(i)).Err()
			done()
			if err == nil {
				p.mu.Lock()
				p.last = i
				p.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	t.Cleanup(p.stop)
	return p
}

func (p *publisher) published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func (p *publisher) stop() {
	p.cancel()
	p.wg.Wait()
}

// awaitDelivered reads rec until a payload of at least n arrives and
// returns the longest time between two deliveries since the publisher
// started (when the handler got them, not when the test read them).
func (p *publisher) awaitDelivered(t testing.TB, rec *timedRecorder, n int) time.Duration {
	t.Helper()
	last, gap := p.started, time.Duration(0)
	for {
		a := rec.next(t)
		gap, last = max(gap, a.at.Sub(last)), a.at
		if i, err := strconv.Atoi(a.payload); err == nil && i >= n {
			return gap
		}
	}
}

// timedRecorder is a Handler that records each payload with the time the
// handler got it.
type timedRecorder struct {
	t  testing.TB
	ch chan arrival
}

type arrival struct {
	payload string
	at      time.Time
}

func (r *timedRecorder) Deliver(_ Target, m Message) {
	select {
	case r.ch <- arrival{strings.Clone(m.Payload), time.Now()}:
	default:
		r.t.Errorf("recorder full, dropped %q", m.Payload)
	}
}

func (r *timedRecorder) Control(string) {}

// next returns the next arrival, failing t after waitTimeout.
func (r *timedRecorder) next(t testing.TB) arrival {
	t.Helper()
	select {
	case a := <-r.ch:
		return a
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a delivery")
		return arrival{}
	}
}

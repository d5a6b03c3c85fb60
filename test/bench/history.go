package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twitchtv/twirp"

	"github.com/notify-dev/notify/api/notifypb"
)

// The history run's publishing: pubWorkers goroutines (apiWorkers for the
// API's one-target calls), pubBatch commands per pipeline or targets per
// batched API call, round robin over pubUsers users nobody is connected as
// (the node receives every message through its subscription and drops it),
// payloads of entrySize bytes.
const (
	pubWorkers = 4
	apiWorkers = 16
	pubBatch   = 100
	pubUsers   = 1000
	entrySize  = 100
	// What a resuming client missed in the since run.
	missed = 100
)

var entry = strings.Repeat("h", entrySize)

// historyRun measures what history costs, on a node of its own with no
// other connection: publishing with history (FCALL notify_publish, the
// API) next to plain PUBLISH, Redis's memory per entry, and handshakes that
// replay 100 missed messages next to the same without since; then the API
// publishes again on a node with history off.
func historyRun(o options, redisAddr string, clients []*clientProc2) error {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 2 * pubWorkers})
	defer rdb.Close()
	n, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench-history", ip: "127.0.0.24"})
	if err != nil {
		return err
	}
	defer n.stop()
	hb := &historyBench{o: o, rdb: rdb, srv: n, clients: clients, history: true}
	for _, step := range []func() error{hb.redisPublishRuns, hb.apiPublishRuns, hb.memoryRun, hb.sinceRun} {
		if err := step(); err != nil {
			return err
		}
	}
	n.stop()

	off, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench-history-off", ip: "127.0.0.25", env: historyOff})
	if err != nil {
		return err
	}
	defer off.stop()
	hb.srv, hb.history = off, false
	if err := hb.apiPublishRuns(); err != nil {
		return err
	}
	return apiRun(o, off, "_history_off")
}

// historyBench is what the phases of the history run share.
type historyBench struct {
	o       options
	rdb     *redis.Client
	srv     *notifyProc
	clients []*clientProc2
	history bool // srv keeps history
}

// pubResult is what one publishing run measured.
type pubResult struct {
	msgs    int64         // messages published (one per target)
	elapsed time.Duration // until the node had received them all
	redis   float64       // Redis CPU seconds
	node    float64       // the node's CPU seconds
}

// print prints the run's figures: name + "_<figure>" + suffix.
func (r pubResult) print(name, suffix string, node bool) {
	n := float64(r.msgs)
	figure(name+"_messages_per_second"+suffix, n/r.elapsed.Seconds(), "messages/s")
	figure(name+"_redis_cpu_per_message"+suffix, r.redis/n*1e6, "us/message")
	if node {
		figure(name+"_node_cpu_per_message"+suffix, r.node/n*1e6, "us/message")
	}
}

// pubRun runs workers goroutines calling call(worker, iteration), which
// returns the messages it published, for half of o.duration. The node
// receives every message through its subscription, as a production node
// does: publishers wait while it is more than pubWindow messages behind
// (else Redis would cut its subscription at the output buffer limit), and
// the run ends when it has them all. The rate is the messages over that
// time: what Redis and the node sustain together.
func (hb *historyBench) pubRun(name string, workers int, call func(w, i int) (int, error)) (pubResult, error) {
	var r pubResult
	rc0, nc0, re0 := redisCPU(hb.rdb), hb.srv.cpu(), hb.srv.metric("notify_broker_reconnects_total")
	bl, stop := hb.track()
	start := time.Now()
	deadline := start.Add(hb.o.duration / 2)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; bl.wait(deadline); i++ {
				k, err := call(w, i)
				bl.sent.Add(int64(k))
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
			}
		})
	}
	wg.Wait()
	published := time.Since(start)
	stop()
	r.msgs = bl.sent.Load()
	if e, ok := firstErr.Load().(string); ok {
		return r, fmt.Errorf("%s: %s", name, e)
	}
	if err := hb.srv.waitMetric("notify_messages_received_total", atLeast(bl.base+float64(r.msgs)), 30*time.Second); err != nil {
		return r, fmt.Errorf("%s: the node did not receive every message: %w", name, err)
	}
	r.elapsed = time.Since(start)
	r.redis, r.node = redisCPU(hb.rdb)-rc0, hb.srv.cpu()-nc0
	if re := hb.srv.metric("notify_broker_reconnects_total"); re != re0 {
		return r, fmt.Errorf("%s: the node's subscription was lost during the run", name)
	}
	info("%s: %d messages published in %v, all received by the node after %v (at most %d behind); cpu: redis %.2fs, node %.2fs",
		name, r.msgs, published.Round(time.Millisecond), r.elapsed.Round(time.Millisecond), bl.maxBehind, r.redis, r.node)
	return r, nil
}

// pubWindow is how far the node may lag behind the publishers, in
// messages: a few MB in Redis's output buffer for its subscription, well
// within the default limit (client-output-buffer-limit pubsub 32mb 8mb 60).
const pubWindow = 20000

// backlog is what the publishers sent and the node received of it.
type backlog struct {
	base           float64 // notify_messages_received_total before the run
	sent, received atomic.Int64
	maxBehind      int64 // written by the tracker, read after it stopped
}

// wait blocks while the node is more than pubWindow messages behind; it
// reports whether the deadline is still ahead.
func (b *backlog) wait(deadline time.Time) bool {
	for b.sent.Load()-b.received.Load() > pubWindow && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return time.Now().Before(deadline)
}

// track polls the node's received messages into a backlog every 20 ms
// until stop is called.
func (hb *historyBench) track() (*backlog, func()) {
	bl := &backlog{base: hb.srv.metric("notify_messages_received_total")}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			bl.received.Store(int64(hb.srv.metric("notify_messages_received_total") - bl.base))
			bl.maxBehind = max(bl.maxBehind, bl.sent.Load()-bl.received.Load())
		}
	}()
	return bl, func() { close(done); <-stopped }
}

// redisPublishRuns publishes straight to Redis, pipelined (pubBatch
// commands a round trip, pubWorkers goroutines): plain PUBLISH (no
// history), then FCALL notify_publish (history).
func (hb *historyBench) redisPublishRuns() error {
	ctx := context.Background()
	for _, run := range []struct {
		name string
		add  func(p redis.Pipeliner, channel string)
	}{
		{"publish_plain", func(p redis.Pipeliner, ch string) { p.Publish(ctx, ch, entry) }},
		{"publish_fcall", func(p redis.Pipeliner, ch string) { p.FCall(ctx, "notify_publish", []string{ch}, entry) }},
	} {
		r, err := hb.pubRun(run.name, pubWorkers, func(w, i int) (int, error) {
			first := (i*pubWorkers + w) * pubBatch
			pipe := hb.rdb.Pipeline()
			for j := range pubBatch {
				run.add(pipe, "notify:pub-user-"+strconv.Itoa((first+j)%pubUsers))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return 0, err
			}
			return pubBatch, nil
		})
		if err != nil {
			return err
		}
		r.print(run.name, "", false)
	}
	return nil
}

// apiPublishRuns publishes through the API (Twirp, protobuf): one target
// a call from apiWorkers goroutines, then pubBatch targets a call from
// pubWorkers goroutines. With history on, the node appends to each
// target's history (FCALL notify_publish, pipelined) and returns the
// cursors, which are checked.
func (hb *historyBench) apiPublishRuns() error {
	tr := &http.Transport{MaxIdleConnsPerHost: apiWorkers}
	defer tr.CloseIdleConnections()
	cl := notifypb.NewNotifyServiceProtobufClient("http://"+hb.srv.addr, &http.Client{Transport: tr, Timeout: 10 * time.Second})
	ctx, err := twirp.WithHTTPRequestHeaders(context.Background(), http.Header{"Authorization": {"Bearer " + apiKey}})
	if err != nil {
		return err
	}
	ids := numbered("pub-user-", pubUsers)
	payload := []byte(entry)
	name, suffix := "publish_api_history", ""
	if !hb.history {
		name, suffix = "publish_api", "_history_off"
	}
	for _, run := range []struct {
		name           string
		workers, batch int
	}{{name, apiWorkers, 1}, {name + "_batch100", pubWorkers, pubBatch}} {
		r, err := hb.pubRun(run.name+suffix, run.workers, func(w, i int) (int, error) {
			first := ((i*run.workers + w) * run.batch) % pubUsers
			resp, err := cl.Publish(ctx, &notifypb.PublishRequest{UserIds: ids[first : first+run.batch], Payload: payload})
			if err != nil {
				return 0, err
			}
			if hb.history && len(resp.Cursors) != int(resp.Targets) {
				return 0, fmt.Errorf("%d cursors for %d targets", len(resp.Cursors), resp.Targets)
			}
			return int(resp.Targets), nil
		})
		if err != nil {
			return err
		}
		r.print(run.name, suffix, true)
	}
	return nil
}

// memoryRun measures Redis's memory per history entry: o.historyUsers
// users given 100 entries of entrySize bytes each (FCALL notify_publish),
// used_memory read before and once the node received them all and the
// keys settled. The database is flushed first, so that no stream of the
// other runs expires meanwhile (FLUSHALL keeps the function library).
func (hb *historyBench) memoryRun() error {
	ctx := context.Background()
	if err := hb.rdb.Do(ctx, "FLUSHALL", "SYNC").Err(); err != nil {
		return err
	}
	time.Sleep(time.Second)
	users := numbered("mem-user-", hb.o.historyUsers)
	m0 := usedMemory(hb.rdb)
	if _, err := hb.fillHistory(users, 100); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	m1 := usedMemory(hb.rdb)
	if n, err := hb.rdb.XLen(ctx, "{notify:"+users[0]+"}:history").Result(); err != nil || n != 100 {
		return fmt.Errorf("memory run: %s's history holds %d entries (%v), want 100", users[0], n, err)
	}
	entries := len(users) * 100
	info("redis memory: used_memory %s -> %s for %d users x 100 entries of %d bytes", mib(m0), mib(m1), len(users), entrySize)
	figure("redis_memory_per_history_entry_bytes", float64(m1-m0)/float64(entries), "bytes")
	return nil
}

// fillHistory publishes per messages with history to each user (a
// pipeline per user, pubWorkers goroutines, within pubWindow of what the
// node received), waits until the node received them all, and returns the
// cursor of each user's first message.
func (hb *historyBench) fillHistory(users []string, per int) ([]string, error) {
	ctx := context.Background()
	bl, stop := hb.track()
	defer stop()
	forever := time.Now().Add(time.Hour)
	first := make([]string, len(users))
	errs := make([]error, pubWorkers)
	var wg sync.WaitGroup
	for w := range pubWorkers {
		wg.Go(func() {
			for u := w; u < len(users) && errs[w] == nil && bl.wait(forever); u += pubWorkers {
				pipe := hb.rdb.Pipeline()
				cmds := make([]*redis.Cmd, per)
				for i := range cmds {
					cmds[i] = pipe.FCall(ctx, "notify_publish", []string{"notify:" + users[u]}, entry)
				}
				if _, errs[w] = pipe.Exec(ctx); errs[w] == nil {
					first[u], errs[w] = cmds[0].Text()
				}
				bl.sent.Add(int64(per))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("filling history: %w", err)
	}
	want := bl.base + float64(len(users)*per)
	return first, hb.srv.waitMetric("notify_messages_received_total", atLeast(want), time.Minute)
}

// sinceRun measures handshakes that resume: o.sinceConns users get
// missed+1 messages with history each; each user connects (envelope=1)
// without since, the baseline: same users, same node; then, once those
// closed, with since=<the cursor of its first message>, reading the
// connect frame, the state frame ("recovered":true) and the missed
// messages as its handshake.
func (hb *historyBench) sinceRun() error {
	users := numbered("since-user-", hb.o.sinceConns)
	since, err := hb.fillHistory(users, missed+1)
	if err != nil {
		return err
	}
	base, err := hb.connectUsers(users, nil, 0)
	if err != nil {
		return fmt.Errorf("handshakes without since: %w", err)
	}
	const recovered = `notify_history_recoveries_total{result="recovered"}`
	rec0 := hb.srv.metric(recovered)
	res, err := hb.connectUsers(users, since, missed)
	if err != nil {
		return fmt.Errorf("handshakes with since: %w", err)
	}
	if got := hb.srv.metric(recovered) - rec0; int(got) != len(users) {
		return fmt.Errorf("%v recoveries counted, want %d", got, len(users))
	}
	for _, f := range []struct {
		suffix string
		hs     handshakes
	}{{"_since100", res}, {"_since100_baseline", base}} {
		n := float64(f.hs.count)
		figure("handshakes_per_second"+f.suffix, n/f.hs.elapsed.Seconds(), "handshakes/s")
		figure("handshake_server_cpu"+f.suffix, f.hs.cpu/n*1e6, "us/handshake")
		figure("handshake_redis_cpu"+f.suffix, f.hs.redis/n*1e6, "us/handshake")
	}
	return nil
}

// connectUsers connects users to the node's /notify/ws (envelope=1),
// spread over the client processes, each with since[i] when since is not
// nil and reading expect frames after the state frame; then closes them
// all and waits until the node has no connection left.
func (hb *historyBench) connectUsers(users, since []string, expect int) (handshakes, error) {
	cmds := make([]command, len(hb.clients))
	per := (len(users) + len(cmds) - 1) / len(cmds)
	for i, c := range hb.clients {
		lo, hi := min(i*per, len(users)), min((i+1)*per, len(users))
		cmds[i] = command{Cmd: "connect", URL: "ws://" + hb.srv.addr + "/notify/ws", Src: c.src, Users: users[lo:hi],
			Envelope: true, Expect: expect, Secret: secret, Concurrency: hb.o.concurrency}
		if since != nil {
			cmds[i].Since = since[lo:hi]
		}
	}
	hs, err := parallelConnect(hb.srv, hb.rdb, hb.clients, cmds)
	if err != nil {
		return hs, err
	}
	if got := hb.srv.metric("notify_connections"); int(got) != len(users) {
		return hs, fmt.Errorf("server has %v connections, want %d", got, len(users))
	}
	info("%d handshakes (since: %t, %d frames replayed each) in %v; cpu: node %.2fs, redis %.2fs",
		hs.count, since != nil, expect, hs.elapsed.Round(time.Millisecond), hs.cpu, hs.redis)
	for _, c := range hb.clients {
		if _, err := c.call(command{Cmd: "close"}); err != nil {
			return hs, err
		}
	}
	return hs, hb.srv.waitMetric("notify_connections", func(v float64) bool { return v == 0 }, 10*time.Second)
}

// parallelConnect sends cmds[i] to clients[i], all at once, and measures
// the handshakes: wall time, the node's and Redis's CPU.
func parallelConnect(srv *notifyProc, rdb *redis.Client, clients []*clientProc2, cmds []command) (handshakes, error) {
	var hs handshakes
	for _, c := range cmds {
		hs.count += len(c.Users)
	}
	replies := make([]reply, len(cmds))
	errs := make([]error, len(cmds))
	cpu0, redis0 := srv.cpu(), redisCPU(rdb)
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { replies[i], errs[i] = c.call(cmds[i]) })
	}
	wg.Wait()
	hs.elapsed = time.Since(start)
	hs.cpu, hs.redis = srv.cpu()-cpu0, redisCPU(rdb)-redis0
	for i, r := range replies {
		if errs[i] != nil || r.Failed > 0 {
			return hs, fmt.Errorf("client %d: %v failed=%d first error: %s", i, errs[i], r.Failed, r.Err)
		}
	}
	return hs, nil
}

// waitMetric polls the node's metric name until done accepts it.
func (p *notifyProc) waitMetric(name string, done func(float64) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		v := p.metric(name)
		if done(v) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is %v after %v", name, v, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func atLeast(want float64) func(float64) bool {
	return func(v float64) bool { return v >= want }
}

// numbered returns prefix0, prefix1, ... prefix<n-1>.
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// redisInfo reads the numeric fields of one INFO section.
func redisInfo(rdb *redis.Client, section string) map[string]float64 {
	m := map[string]float64{}
	s, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		info("INFO %s: %v", section, err)
		return m
	}
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if f, err := strconv.ParseFloat(v, 64); ok && err == nil {
			m[k] = f
		}
	}
	return m
}

// redisCPU is the CPU seconds Redis used so far (INFO cpu: used_cpu_sys +
// used_cpu_user).
func redisCPU(rdb *redis.Client) float64 {
	m := redisInfo(rdb, "cpu")
	return m["used_cpu_sys"] + m["used_cpu_user"]
}

// usedMemory is INFO memory's used_memory, in bytes.
func usedMemory(rdb *redis.Client) int64 { return int64(redisInfo(rdb, "memory")["used_memory"]) }

// Command bench is the load benchmark behind `make bench`: it starts a real
// redis-server and a notify node as separate processes, drives them with
// client processes (several 127.0.0.x source addresses, since a process may
// hold at most 20,000 descriptors), and prints each figure on its own line as
// "name value unit".
//
//	go run ./test/bench -notify bin/notify
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	secret = "bench-secret"
	apiKey = "bench-api-key"
)

type options struct {
	notify        string
	idleConns     int
	clients       int
	latencyConns  int
	rate          int
	duration      time.Duration
	broadcastRate int
	concurrency   int
	profile       string
	relayConns    int
	relayRate     int
	sinceConns    int
	historyUsers  int
	tokensOnly    bool
	modeUsers     int
	modeRate      int
	modesOnly     bool
	rampOnly      bool
	floorOnly     bool
	perUserOnly   bool
	broadcastOnly bool
	floor         float64 // the one-write floor at -rate, writes per CPU-second; 0: not measured
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		runFloorWriter(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "client" {
		runClient()
		return
	}
	var o options
	flag.StringVar(&o.notify, "notify", "bin/notify", "notify binary")
	flag.IntVar(&o.idleConns, "conns", 15000, "idle connections")
	flag.IntVar(&o.clients, "clients", 3, "client processes")
	flag.IntVar(&o.latencyConns, "latency-conns", 10000, "connections addressed in the latency run")
	flag.IntVar(&o.rate, "rate", 20000, "messages per second in the latency run")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each timed run")
	flag.IntVar(&o.broadcastRate, "broadcast-rate", 100, "topic messages per second in the broadcast run (each goes to the -latency-conns first connections)")
	flag.BoolVar(&o.floorOnly, "floor-only", false, "measure only the one-write-per-delivery floor")
	flag.BoolVar(&o.broadcastOnly, "broadcast-only", false, "run only the single node's ramp and broadcast run, history off")
	flag.BoolVar(&o.perUserOnly, "peruser-only", false, "run only the floor and the per-user runs, on a node with history off (GOMAXPROCS from the environment)")
	flag.IntVar(&o.concurrency, "concurrency", 64, "handshakes in flight per client process")
	flag.StringVar(&o.profile, "profile", "", "write CPU and allocation profiles of the node's timed runs to this directory")
	flag.IntVar(&o.relayConns, "relay-conns", 5000, "relayed connections (and as many direct ones) in the relay run")
	flag.IntVar(&o.relayRate, "relay-rate", 10000, "messages per second in the relay run")
	flag.IntVar(&o.sinceConns, "since-conns", 5000, "connections that resume with 100 missed messages each (history run)")
	flag.IntVar(&o.historyUsers, "history-users", 2000, "users given 100 history entries each for the Redis memory figure")
	flag.BoolVar(&o.tokensOnly, "tokens-only", false, "run only the handshakes by token kind (see tokenRuns)")
	flag.IntVar(&o.modeUsers, "mode-users", 2000, "users (one connection each) per node in the subscribe mode runs")
	flag.IntVar(&o.modeRate, "mode-rate", 5000, "messages per second per node in the subscribe mode runs")
	flag.BoolVar(&o.rampOnly, "ramp-only", false, "run only the single node's handshake ramp and idle figures (no timed runs)")
	flag.BoolVar(&o.modesOnly, "modes-only", false, "run only the subscribe mode comparison (see subscribeRun)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.latencyConns > o.idleConns {
		return errors.New("-latency-conns exceeds -conns")
	}
	tmp, err := os.MkdirTemp("", "notify-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	redisAddr, stopRedis, err := startRedis(tmp)
	if err != nil {
		return err
	}
	defer stopRedis()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 4})
	defer rdb.Close()

	clients := make([]*clientProc2, o.clients)
	for i := range clients {
		if clients[i], err = spawnClient(i); err != nil {
			return err
		}
		defer clients[i].quit()
	}

	if !o.modesOnly && !o.tokensOnly && !o.rampOnly && !o.broadcastOnly {
		if o.floor, err = floorRun(o.latencyConns, o.rate, o.duration); err != nil {
			return err
		}
		if o.floorOnly {
			return nil
		}
		if o.perUserOnly {
			return perUserRun(o, redisAddr, rdb, clients, historyOff, "_history_off", true)
		}
	}
	if o.tokensOnly {
		return tokenRuns(o, redisAddr, rdb, clients)
	}
	if o.modesOnly {
		return subscribeRun(o, tmp, redisAddr, rdb, clients)
	}
	if o.rampOnly || o.broadcastOnly {
		return singleNodeRun(o, redisAddr, rdb, clients, historyOff, "_history_off")
	}
	// The node's defaults (history on), then the token kinds' handshakes,
	// then the defaults with history off.
	if err := singleNodeRun(o, redisAddr, rdb, clients, nil, ""); err != nil {
		return err
	}
	if err := tokenRuns(o, redisAddr, rdb, clients); err != nil {
		return err
	}
	if err := singleNodeRun(o, redisAddr, rdb, clients, historyOff, "_history_off"); err != nil {
		return err
	}
	if err := oneCoreRun(o, redisAddr, rdb, clients); err != nil {
		return err
	}
	if err := relayRun(o, redisAddr, rdb, clients); err != nil {
		return err
	}
	if err := subscribeRun(o, tmp, redisAddr, rdb, clients); err != nil {
		return err
	}
	return historyRun(o, redisAddr, clients)
}

// historyOff is the environment of a node without history.
var historyOff = []string{"NOTIFY_HISTORY_SIZE=0"}

// singleNodeRun starts a node with env added to the defaults, runs the
// single-node phases on it, prints their figures with suffix appended to
// every name, and stops the node once the clients closed its connections.
func singleNodeRun(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2, env []string, suffix string) error {
	srv, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench" + strings.ReplaceAll(suffix, "_", "-"), ip: "127.0.0.1", env: env})
	if err != nil {
		return err
	}
	defer srv.stop()
	b := &bench{o: o, rdb: rdb, srv: srv, clients: clients,
		url: "ws://" + srv.addr + "/notify/ws", topics: []string{broadcastTopic}, suffix: suffix}
	m, err := b.measure()
	if err != nil {
		return err
	}
	printFigures(o, m, suffix)
	// Free the node's connections before the next run.
	return b.each(command{Cmd: "close"})
}

// broadcastTopic is joined by the o.latencyConns first connections: the
// broadcast run's audience.
const broadcastTopic = "broadcast"

// bench is what the phases of the single-node run share: every client
// process connects to srv's WebSocket endpoint at url; the o.latencyConns
// first connections join topics.
type bench struct {
	o       options
	rdb     *redis.Client
	srv     *notifyProc
	clients []*clientProc2
	url     string
	topics  []string
	suffix  string // of the figures' names and the profiles' (history off: "_history_off")
}

// measurements are the single-node run's results, printed by printFigures.
type measurements struct {
	rss0   int64   // idle baseline, after a collection
	g100   float64 // goroutines at 100 connections
	hs     handshakes
	rssNow int64   // at o.idleConns connections, 8 s after the ramp
	rssN   int64   // the same, after a collection
	gN     float64 // goroutines at o.idleConns connections
	thN    int     // OS threads at o.idleConns connections, right after the ramp
	lat    timed
	max    maxRate
	bcast  timed
}

// handshakes is what the handshake ramp measured.
type handshakes struct {
	count   int           // handshakes made by the ramp (o.idleConns - 100)
	elapsed time.Duration // wall time of the ramp
	cpu     float64       // server CPU seconds it took
	load    float64       // the load generator's CPU seconds (this process and the clients)
	redis   float64       // Redis CPU seconds it took (history run only)
}

// timed is what one timed publishing run measured.
type timed struct {
	sent      int     // messages published
	delivered float64 // notify_messages_delivered_total added
	cpu       float64 // server CPU seconds used
	alloc     float64 // bytes the server allocated (go_memstats_alloc_bytes_total)
	load      float64 // CPU seconds of the load generator: this process and the clients
	floor     float64 // the paced floor taken next to the run, writes per CPU-second (latency run only; 0: not taken)
	hist      []uint64
	received  int64
	closed    int64
}

// measure runs the single-node phases in order.
func (b *bench) measure() (measurements, error) {
	var m measurements
	var err error
	m.rss0 = b.idleBaseline()
	if m.g100, err = b.firstHundred(); err != nil {
		return m, err
	}
	if m.hs, err = b.handshakeRamp(); err != nil {
		return m, err
	}
	m.thN = b.srv.threads()
	m.rssNow, m.rssN, m.gN = b.idleRSS()
	if b.o.rampOnly {
		return m, nil
	}
	if b.o.broadcastOnly {
		m.bcast, err = b.broadcastRun()
		return m, err
	}
	if m.lat, err = b.latencyRun(); err != nil {
		return m, err
	}
	if m.max, err = b.maxRateRun(); err != nil {
		return m, err
	}
	if m.bcast, err = b.broadcastRun(); err != nil {
		return m, err
	}
	return m, nil
}

// idleBaseline returns the RSS of the node up and ready, no client. RSS is
// read after a collection (forced through the pprof listener) and a pause
// for the scavenger: the state an idle Go server reaches by itself within
// two minutes (the runtime's periodic GC), without waiting for it.
func (b *bench) idleBaseline() int64 {
	time.Sleep(3 * time.Second)
	rss0 := b.srv.steadyRSS()
	g0 := b.srv.goroutines()
	info("baseline: rss %s, goroutines %.0f", mib(rss0), g0)
	return rss0
}

// firstHundred opens 100 connections and returns the goroutines the node
// then runs.
func (b *bench) firstHundred() (float64, error) {
	c := b.clients[0]
	if r, err := c.call(command{Cmd: "connect", URL: b.url, Src: c.src, First: 0, Count: 100, Topics: b.topics, Secret: secret, Concurrency: 16}); err != nil || r.Failed > 0 {
		return 0, fmt.Errorf("connect 100: %v %+v", err, r)
	}
	return b.srv.settledGoroutines(), nil
}

// settledGoroutines waits until the node's goroutine count has held for
// longer than the second for which it keeps the goroutines that served
// handshakes, waiting for more (node/internal/front's ServerIdle), and
// returns it; at most 10 s.
func (p *notifyProc) settledGoroutines() float64 {
	g := p.goroutines()
	since := time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond) // polling interval
		if now := p.goroutines(); now != g {
			g, since = now, time.Now()
		} else if time.Since(since) > 1500*time.Millisecond {
			break
		}
	}
	return g
}

// handshakeRamp opens the rest of o.idleConns, as fast as the clients can:
// the handshake rate.
func (b *bench) handshakeRamp() (handshakes, error) {
	rest := b.o.idleConns - 100
	per := rest / len(b.clients)
	var wg sync.WaitGroup
	replies := make([]reply, len(b.clients))
	errs := make([]error, len(b.clients))
	cpu0, load0 := b.srv.cpu(), b.loadCPU()
	start := time.Now()
	for i, c := range b.clients {
		n := per
		if i == len(b.clients)-1 {
			n = rest - per*(len(b.clients)-1)
		}
		first := 100 + i*per
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], errs[i] = b.connectRange(c, first, n)
		}()
	}
	stopProf := b.srv.profileCPU(b.o.profile, "handshakes"+b.suffix, 2*time.Second)
	wg.Wait()
	hs := handshakes{count: rest}
	hs.elapsed = time.Since(start)
	hs.cpu = b.srv.cpu() - cpu0
	hs.load = b.loadCPU() - load0
	stopProf()
	for i, r := range replies {
		if errs[i] != nil || r.Failed > 0 {
			return hs, fmt.Errorf("client %d: %v failed=%d first error: %s", i, errs[i], r.Failed, r.Err)
		}
	}
	if got := b.srv.metric("notify_connections"); int(got) != b.o.idleConns {
		return hs, fmt.Errorf("server has %v connections, want %d", got, b.o.idleConns)
	}
	info("%d handshakes in %v, server cpu %.2fs, load generator cpu %.2fs", rest, hs.elapsed.Round(time.Millisecond), hs.cpu, hs.load)
	return hs, nil
}

// connectRange connects users first..first+n-1 through c, those below
// o.latencyConns joined to b.topics; it sums the replies.
func (b *bench) connectRange(c *clientProc2, first, n int) (reply, error) {
	var sum reply
	for _, part := range []struct {
		first, n int
		topics   []string
	}{
		{first, max(0, min(first+n, b.o.latencyConns)-first), b.topics},
		{max(first, b.o.latencyConns), first + n - max(first, b.o.latencyConns), nil},
	} {
		if part.n <= 0 {
			continue
		}
		r, err := c.call(command{Cmd: "connect", URL: b.url, Src: c.src, First: part.first, Count: part.n, Topics: part.topics, Secret: secret, Concurrency: b.o.concurrency})
		sum.Failed += r.Failed
		if sum.Err == "" {
			sum.Err = r.Err
		}
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// idleRSS returns the RSS 8 s after the ramp, the RSS after a collection
// and the goroutines, all at o.idleConns connections. With -profile it also
// reports the heap figures and saves a heap profile.
func (b *bench) idleRSS() (rssNow, rssN int64, gN float64) {
	time.Sleep(8 * time.Second)
	rssNow = b.srv.rss()
	rssN = b.srv.steadyRSS()
	gN = b.srv.goroutines()
	info("at %d connections: rss %s 10s after the ramp, %s after a collection; goroutines %.0f", b.o.idleConns, mib(rssNow), mib(rssN), gN)
	if b.o.profile != "" {
		for _, m := range []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
			"go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_next_gc_bytes", "go_memstats_sys_bytes"} {
			info("  %s %s", m, mib(int64(b.srv.metric(m))))
		}
		b.srv.saveHeap(b.o.profile, "heap"+b.suffix)
		b.srv.saveProfile(b.o.profile, "threadcreate", "threadcreate"+b.suffix)
	}
	return rssNow, rssN, gN
}

// latencyRun publishes o.rate messages/s, each to one user, round robin
// over latencyConns users (one connection each).
//
// With the floor measured (o.floor > 0), the paced floor is taken again for
// half of o.duration just before the run and half just after: this
// machine's speed drifts by a third within minutes (other tenants of its
// host), so the ratio to the floor compares the node with the floor of its
// own minute, not with the one of the bench's start.
func (b *bench) latencyRun() (timed, error) {
	var before, after float64
	if b.o.floor > 0 {
		var err error
		if before, err = floorPaced(b.o.latencyConns, b.o.rate, b.o.duration/2); err != nil {
			return timed{}, err
		}
	}
	t, err := b.timedRun("latency", b.o.rate, time.Second, func(i int) string { return "notify:user-" + strconv.Itoa(i%b.o.latencyConns) })
	if err != nil {
		return t, err
	}
	if t.closed > 0 {
		return t, fmt.Errorf("%d connections closed during the latency run", t.closed)
	}
	info("latency run: published %d, delivered %.0f, received %d, server cpu %.2fs", t.sent, t.delivered, t.received, t.cpu)
	if b.o.floor > 0 {
		if after, err = floorPaced(b.o.latencyConns, b.o.rate, b.o.duration/2); err != nil {
			return t, err
		}
		t.floor = (before + after) / 2
		info("floor next to the latency run: %.0f before, %.0f after (%.0f at the start) writes/cpu-s", before, after, b.o.floor)
	}
	return t, nil
}

// broadcastRun publishes every message to the topic the o.latencyConns first
// connections joined: the broadcast run.
func (b *bench) broadcastRun() (timed, error) {
	t, err := b.timedRun("broadcast", b.o.broadcastRate, 2*time.Second, func(int) string { return "notify_topic:" + broadcastTopic })
	if err != nil {
		return t, err
	}
	info("broadcast run: published %d to %d connections, delivered %.0f, received %d, closed %d, server cpu %.2fs",
		t.sent, b.o.latencyConns, t.delivered, t.received, t.closed, t.cpu)
	return t, nil
}

// timedRun resets the clients' counts, publishes rate messages/s to
// channel for o.duration (profiled as name), waits tail for the last
// deliveries and collects what the node and the clients counted.
func (b *bench) timedRun(name string, rate int, tail time.Duration, channel func(i int) string) (timed, error) {
	return b.timedRunFor(name, rate, b.o.duration, tail, channel)
}

// timedRunFor is timedRun publishing for d.
func (b *bench) timedRunFor(name string, rate int, d, tail time.Duration, channel func(i int) string) (timed, error) {
	if err := b.each(command{Cmd: "reset"}); err != nil {
		return timed{}, err
	}
	del0, cpu0, alloc0 := b.srv.metric("notify_messages_delivered_total"), b.srv.cpu(), b.srv.metric("go_memstats_alloc_bytes_total")
	load0 := b.loadCPU()
	if b.o.profile != "" {
		// pprof -base <name>_allocs0 <name>_allocs: what the run allocated.
		b.srv.saveProfile(b.o.profile, "allocs", name+b.suffix+"_allocs0")
	}
	wait := b.srv.profileCPU(b.o.profile, name+b.suffix, d-time.Second)
	var t timed
	t.sent = publish(b.rdb, rate, d, channel)
	wait()
	time.Sleep(tail)
	t.delivered, t.cpu = b.srv.metric("notify_messages_delivered_total")-del0, b.srv.cpu()-cpu0
	t.alloc = b.srv.metric("go_memstats_alloc_bytes_total") - alloc0
	t.load = b.loadCPU() - load0
	if b.o.profile != "" {
		b.srv.saveProfile(b.o.profile, "allocs", name+b.suffix+"_allocs")
	}
	var err error
	if t.hist, t.received, t.closed, err = collect(b.clients); err != nil {
		return timed{}, err
	}
	return t, nil
}

// each sends cmd to every client process in turn, stopping at the first
// error.
func (b *bench) each(cmd command) error {
	for _, c := range b.clients {
		if _, err := c.call(cmd); err != nil {
			return err
		}
	}
	return nil
}

// printFigures prints the single-node run's figures, one "name value unit"
// line each, suffix appended to every name.
func printFigures(o options, m measurements, suffix string) {
	figure := func(name string, v float64, unit string) { figure(name+suffix, v, unit) }
	figure("idle_rss_per_connection", float64(m.rssN-m.rss0)/float64(o.idleConns), "bytes")
	figure("idle_rss_per_connection_before_gc", float64(m.rssNow-m.rss0)/float64(o.idleConns), "bytes")
	figure("idle_rss_baseline", float64(m.rss0)/(1<<20), "MiB")
	figure("goroutines_at_100_connections", m.g100, "goroutines")
	figure(fmt.Sprintf("goroutines_at_%d_connections", o.idleConns), m.gN, "goroutines")
	figure("os_threads_after_ramp", float64(m.thN), "threads")
	figure("handshakes_per_second", float64(m.hs.count)/m.hs.elapsed.Seconds(), "handshakes/s")
	figure("handshake_server_cpu", m.hs.cpu/float64(m.hs.count)*1e6, "us/handshake")
	figure("handshake_loadgen_cpu", m.hs.load/float64(m.hs.count)*1e6, "us/handshake")
	if o.rampOnly {
		return
	}
	if !o.broadcastOnly {
		printPerUser(o, m.lat, figure)
		printMaxRate(m.max, figure)
	}
	// Broadcast: each message to a topic of o.latencyConns connections.
	figure("broadcast_deliveries_per_second", m.bcast.delivered/o.duration.Seconds(), "deliveries/s")
	figure("broadcast_deliveries_per_cpu_second", m.bcast.delivered/m.bcast.cpu, "deliveries/cpu-s")
	figure("broadcast_p50", percentile(m.bcast.hist, 0.50), "ms")
	figure("broadcast_p99", percentile(m.bcast.hist, 0.99), "ms")
	figure("broadcast_lost", float64(int64(m.bcast.sent)*int64(o.latencyConns)-m.bcast.received), "deliveries")
}

// printPerUser prints the per-user run's figures: each message to one
// user with one connection.
func printPerUser(o options, lat timed, figure func(string, float64, string)) {
	k := fmt.Sprintf("_%dk", o.rate/1000)
	figure("peruser_publish_rate"+k, float64(lat.sent)/o.duration.Seconds(), "messages/s")
	figure("peruser_p50"+k, percentile(lat.hist, 0.50), "ms")
	figure("peruser_p99"+k, percentile(lat.hist, 0.99), "ms")
	figure("peruser_p999"+k, percentile(lat.hist, 0.999), "ms")
	figure("peruser_lost"+k, float64(int64(lat.sent)-lat.received), "messages")
	perCPU := lat.delivered / lat.cpu
	figure("peruser_deliveries_per_cpu_second"+k, perCPU, "deliveries/cpu-s")
	if lat.floor > 0 {
		figure("peruser_floor_adjacent"+k, lat.floor, "writes/cpu-s")
		figure("peruser_ratio_to_floor"+k, perCPU/lat.floor, "ratio")
	}
	figure("peruser_alloc_per_delivery"+k, lat.alloc/lat.delivered, "bytes")
}

func info(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", a...)
}

func figure(name string, v float64, unit string) {
	fmt.Printf("%s %.2f %s\n", name, v, unit)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// publish sends rate messages/s for d, each carrying its send time, through
// Redis pipelines of a millisecond's worth. It returns how many were sent.
func publish(rdb *redis.Client, rate int, d time.Duration, channel func(i int) string) int {
	return publishWith(rdb, false, rate, d, channel)
}

// publishWith is publish through any client (a Cluster's too), with
// SPUBLISH when sharded.
func publishWith(rdb redis.UniversalClient, sharded bool, rate int, d time.Duration, channel func(i int) string) int {
	ctx := context.Background()
	pad := strings.Repeat("x", 100-19)
	start := time.Now()
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for now := range tick.C {
		elapsed := now.Sub(start)
		if elapsed >= d {
			break
		}
		due := int(float64(rate) * elapsed.Seconds())
		if due <= sent {
			continue
		}
		pipe := rdb.Pipeline()
		for ; sent < due; sent++ {
			payload := strconv.FormatInt(time.Now().UnixNano(), 10) + pad
			if sharded {
				pipe.SPublish(ctx, channel(sent), payload)
			} else {
				pipe.Publish(ctx, channel(sent), payload)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			info("publish: %v", err)
		}
	}
	return sent
}

func collect(clients []*clientProc2) (hist []uint64, received, closed int64, err error) {
	hist = make([]uint64, histSize)
	for _, c := range clients {
		r, err := c.call(command{Cmd: "report"})
		if err != nil {
			return nil, 0, 0, err
		}
		for i, v := range r.Hist {
			hist[i] += v
		}
		received += r.Received
		closed += r.Closed
	}
	return hist, received, closed, nil
}

// percentile returns the q-quantile of the histogram in milliseconds.
func percentile(hist []uint64, q float64) float64 {
	var total uint64
	for _, v := range hist {
		total += v
	}
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var acc uint64
	for i, v := range hist {
		acc += v
		if acc > want {
			return float64(time.Duration(i+1)*histBucket) / float64(time.Millisecond)
		}
	}
	return float64(time.Second) / float64(time.Millisecond)
}

// ---- processes ----

func startRedis(dir string, extra ...string) (string, func(), error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log")}, extra...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("redis-server: %w", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for i := 0; ; i++ {
		c := redis.NewClient(&redis.Options{Addr: addr})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return addr, stop, nil
		}
		if i > 100 {
			stop()
			return "", nil, fmt.Errorf("redis-server not answering: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type notifyProc struct {
	cmd    *exec.Cmd
	addr   string
	pprof  string
	gossip string
	// web makes the bench's requests to the node, each on a connection of
	// its own, closed after it: a connection the bench kept open would be
	// one more goroutine of the node's (net/http's) in the counts made
	// after it was opened than in those made before. And uncompressed:
	// promhttp pools a gzip writer for compressed scrapes (1.3-1.6 MiB),
	// which the RSS read after the bench's first scrape would count and the
	// idle baseline, read before it, would not.
	web *http.Client
}

// steadyRSS forces a collection, gives the scavenger a moment to return
// freed pages, and reads RSS.
func (p *notifyProc) steadyRSS() int64 {
	if resp, err := p.web.Get("http://" + p.pprof + "/debug/pprof/heap?gc=1"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(3 * time.Second)
	return p.rss()
}

// saveHeap writes a heap profile taken after a forced collection.
func (p *notifyProc) saveHeap(dir, name string) { p.saveProfile(dir, "heap?gc=1", name) }

// saveProfile saves the node's pprof profile kind (a path under
// /debug/pprof/) as dir/name.pprof.
func (p *notifyProc) saveProfile(dir, kind, name string) {
	resp, err := p.web.Get("http://" + p.pprof + "/debug/pprof/" + kind)
	if err != nil {
		info("%s profile: %v", kind, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// profileCPU starts a CPU profile of d seconds in the background.
func (p *notifyProc) profileCPU(dir, name string, d time.Duration) func() {
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := p.web.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.pprof, int(d.Seconds())))
		if err != nil {
			info("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, name+".pprof"))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// nodeOpts describe one notify process of the benchmark.
type nodeOpts struct {
	name string
	ip   string   // loopback address it listens on
	join []string // gossip addresses of other nodes
	env  []string // added to the environment (after the defaults: they win)
	// noSecret leaves NOTIFY_JWT_SECRET out (a node on NOTIFY_JWKS_URL).
	noSecret bool
}

func startNotify(bin, redisAddr string, no nodeOpts) (*notifyProc, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	addr := no.ip + ":" + strconv.Itoa(ports[0])
	// The pprof listener is used to force a collection before reading RSS.
	pprofAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	gossip := no.ip + ":" + strconv.Itoa(ports[2])
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PORT="+addr, "PPROF_PORT="+pprofAddr, "PUBSUB_REDIS_ADDR="+redisAddr,
		"NOTIFY_API_KEY="+apiKey, "LOG_LEVEL=warn", "NOTIFY_DRAIN_TIMEOUT=1s",
		"NOTIFY_NODE_NAME="+no.name, "GRPC_PORT=off", "NOTIFY_GOSSIP_ADDR="+gossip,
		"NOTIFY_JOIN="+strings.Join(no.join, ","))
	if no.noSecret {
		cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, "NOTIFY_JWT_SECRET=") })
	} else {
		cmd.Env = append(cmd.Env, "NOTIFY_JWT_SECRET="+secret)
	}
	cmd.Env = append(cmd.Env, no.env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (run make build first)", bin, err)
	}
	p := &notifyProc{cmd: cmd, addr: addr, pprof: pprofAddr, gossip: gossip,
		web: &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}}
	for i := 0; ; i++ {
		resp, err := p.web.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		if i > 200 {
			p.stop()
			return nil, errors.New("notify never became ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *notifyProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

// rss is the resident set size in bytes (VmRSS).
func (p *notifyProc) rss() int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// threads is the number of OS threads (/proc/<pid>/status Threads).
func (p *notifyProc) threads() int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// goroutines is the node's goroutine count, the total of its goroutine
// profile, or -1. It counts the two goroutines serving the profile's
// request (net/http's and its background read). Not go_goroutines: a
// /metrics scrape collects on goroutines of its own (client_golang's
// Registry.Gather starts up to one per collector), and the Go collector
// counts those still alive, 0 to 2 from one scrape to the next on an idle
// node.
func (p *notifyProc) goroutines() float64 {
	resp, err := p.web.Get("http://" + p.pprof + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	head, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "goroutine profile: total ")))
	if err != nil {
		return -1
	}
	return float64(n)
}

// cpu is user+system CPU seconds used so far (/proc/<pid>/stat).
func (p *notifyProc) cpu() float64 { return pidCPU(p.cmd.Process.Pid) }

// metric reads one unlabelled (or summed) series from /metrics.
func (p *notifyProc) metric(name string) float64 {
	resp, err := p.web.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum, found := 0.0, false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

type clientProc2 struct {
	cmd *exec.Cmd
	in  *json.Encoder
	out *json.Decoder
	src string
	mu  sync.Mutex
}

func spawnClient(i int) (*clientProc2, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "client")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &clientProc2{cmd: cmd, in: json.NewEncoder(stdin), out: json.NewDecoder(bufio.NewReaderSize(stdout, 1<<20)),
		src: fmt.Sprintf("127.0.0.%d", 2+i)}, nil
}

func (c *clientProc2) call(cmd command) (reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.in.Encode(cmd); err != nil {
		return reply{}, err
	}
	var r reply
	if err := c.out.Decode(&r); err != nil {
		return reply{}, fmt.Errorf("client %s: %w", c.src, err)
	}
	if !r.OK && r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

func (c *clientProc2) quit() {
	_ = c.in.Encode(command{Cmd: "quit"})
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

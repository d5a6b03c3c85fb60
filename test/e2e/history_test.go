package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// historyScale is the size of one TestHistoryRecovery run.
type historyScale struct {
	name             string
	users            int           // users published to (one message each per round)
	every            time.Duration // a round per interval
	workers          int           // concurrent Publish calls
	envelope, raw    int           // Go clients, each of its own user
	ws, phoenix, sse int           // JavaScript clients, each of its own user
}

// The short run is part of make test; NOTIFY_E2E_LONG=1 (make e2e-long)
// runs the full load.
var (
	historyShort = historyScale{name: "short", users: 200, every: time.Second, workers: 8,
		envelope: 80, raw: 30, ws: 10, phoenix: 10, sse: 10}
	historyLong = historyScale{name: "long (NOTIFY_E2E_LONG=1)", users: 1000, every: 500 * time.Millisecond, workers: 32,
		envelope: 300, raw: 100, ws: 40, phoenix: 40, sse: 30}
)

// sseUsersPerOrigin: EventSources per page, and per haproxy address (a
// browser opens at most 6 connections to one host:port).
const sseUsersPerOrigin = 5

// settleWithin bounds each wait for the clients to be back on their owners.
const settleWithin = 60 * time.Second

// TestHistoryRecovery (issue 10): three nodes behind the round-robin
// haproxy and a real redis-server; the API publishes, with history, a
// sequence number per user and round to every user for the whole test,
// while a fourth node joins (moved users are closed with 1012 "moved"),
// each node in turn is restarted with SIGTERM (1012 "shutdown"), and one
// node is SIGKILLed. Resuming clients (Go envelope clients with ?since=,
// the ws package, phoenix.js joining with {"since"}, EventSource in
// Chromium with Last-Event-ID) must end with every message published
// after their first state frame's cursor exactly once and in order, and
// every resume recovered. Go clients of raw frames, which cannot resume,
// are counted as the baseline.
func TestHistoryRecovery(t *testing.T) {
	requireTools(t, "haproxy", "redis-server")
	sc := historyShort
	if os.Getenv("NOTIFY_E2E_LONG") != "" {
		sc = historyLong
	}
	begin := time.Now()
	h := startHistory(t, sc)
	if !t.Run("join", h.join) || !t.Run("rolling-deploy", h.rollingDeploy) || !t.Run("sigkill", h.sigkill) {
		return
	}
	h.finish(t)
	t.Logf("%s run: total %s", sc.name, time.Since(begin).Round(time.Millisecond))
}

// historyTest is TestHistoryRecovery's processes, clients and publisher.
type historyTest struct {
	sc        historyScale
	e         *env
	all       []*node // n1-n4
	live      []*node
	lb        *haproxy
	w         *world
	pub       *apiPublisher
	js        *jsClients // nil without Node.js
	stopTicks func()
	pubStart  time.Time
}

// startHistory starts redis, n1-n3 and haproxy (which lists n4 too),
// publishes a first round, starts publishing, and connects every client.
func startHistory(t *testing.T, sc historyScale) *historyTest {
	t.Helper()
	e := newEnv(t)
	h := &historyTest{sc: sc, e: e}
	for i := range 4 {
		h.all = append(h.all, e.planNode(fmt.Sprintf("h%d", i+1), fmt.Sprintf("127.0.0.%d", 31+i)))
	}
	for i, n := range h.all[:3] {
		e.start(n, gossipAddrs(h.all[:i]), true)
	}
	h.live = slices.Clone(h.all[:3])
	waitRing(t, h.live, names(h.live))
	h.lb = e.startHAProxyBinds(h.all, (sc.sse+sseUsersPerOrigin-1)/sseUsersPerOrigin)
	h.lb.waitServers(t, names(h.live)...)

	h.w = newWorld(t, h.lb.addr, e.redis.Client(t), sc.users, 0)
	h.pub = newAPIPublisher(h.w.users, sc.workers)
	h.pub.use(h.live)
	h.w.send = h.pub.send
	// A first round: every user's stream has a cursor for its clients'
	// first state frames to name.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.pubStart = time.Now()
	if err := h.w.publish(ctx); err != nil {
		t.Fatal(err)
	}
	h.stopTicks = h.w.ticker(t, sc.every)

	start := time.Now()
	users := h.w.users
	for _, u := range users[:sc.envelope] {
		h.w.addClient(u, true)
	}
	for _, u := range users[sc.envelope : sc.envelope+sc.raw] {
		h.w.addClient(u, false)
	}
	h.startJS(t, users[sc.envelope+sc.raw:])
	h.w.connect(t)
	if h.js != nil {
		h.js.waitStarted(t, 90*time.Second)
	}
	t.Logf("%s run: redis, 3 nodes, haproxy; publishing to %d users every %s through the API; %d envelope and %d raw Go clients and %d JavaScript clients connected in %s",
		sc.name, sc.users, sc.every, sc.envelope, sc.raw, h.jsCount(), time.Since(start).Round(time.Millisecond))
	h.settle(t, "connected")
	return h
}

func gossipAddrs(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.gossip)
	}
	return out
}

// startJS starts the JavaScript clients, of the users given, when Node.js
// and the npm packages are there (EventSource also needs Chromium).
func (h *historyTest) startJS(t *testing.T, users []string) {
	t.Helper()
	br, err := locateBrowser(false)
	if err != nil {
		t.Logf("no JavaScript clients: %v", err)
		return
	}
	var specs []jsSpec
	add := func(kind string, n int, base func(i int) string) {
		for i := range n {
			u := users[len(specs)]
			specs = append(specs, jsSpec{Kind: kind, User: u, Token: userToken(t, u), Base: base(i)})
		}
	}
	lb := func(int) string { return "http://" + h.lb.addr }
	add("ws", h.sc.ws, lb)
	add("phoenix", h.sc.phoenix, lb)
	if br.chromium == "" {
		t.Logf("no EventSource clients: Chromium is missing (make deps)")
	} else {
		add("sse", h.sc.sse, func(i int) string { return "http://" + h.lb.extra[i/sseUsersPerOrigin] })
	}
	h.js = startJSClients(t, br, h.e.dir, specs)
}

func (h *historyTest) jsCount() int {
	if h.js == nil {
		return 0
	}
	return len(h.js.clients)
}

// settle waits until every Go client is on its user's owner (the ring of
// the live nodes) and has received a message published after it
// connected, and then every JavaScript client has received that message
// too (or a later one).
func (h *historyTest) settle(t *testing.T, what string) {
	t.Helper()
	start := time.Now()
	h.w.waitSettled(t, newRing(t, names(h.live)...), settleWithin, true)
	q := h.w.lastSeq()
	if h.js != nil {
		h.js.waitReceived(t, q, settleWithin)
	}
	h.lb.waitServers(t, names(h.live)...)
	t.Logf("%s: settled after %s (every client has #%d)", what, time.Since(start).Round(time.Millisecond), q)
}

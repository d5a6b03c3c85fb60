package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/ring"
)

// world is the clients, the publisher and the checks of one scenario.
//
// Every publish sends one sequence number to every user at once (message
// "<user>:<seq>"), so each connection must see consecutive numbers: exactly
// once, in order. The time each publish began is kept: a message published
// after a session's state frame arrived must reach that session (the
// contract: nothing published after frame 1 is lost).
type world struct {
	t       *testing.T
	url     string
	rdb     *redis.Client
	users   []string
	clients []*client
	dialSem chan struct{}
	// send publishes sequence number q to every user; nil means a Redis
	// pipeline of PUBLISH (no history). Set before anything publishes.
	send func(ctx context.Context, q int) error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pubMu  sync.Mutex // one publish at a time: keeps per-user order
	mu     sync.Mutex
	seq    int         // last sequence number published
	starts []time.Time // starts[q]: when the publish of q began (starts[0] unused)
}

func newWorld(t *testing.T, lbAddr string, rdb *redis.Client, users, perUser int) *world {
	ctx, cancel := context.WithCancel(context.Background())
	w := &world{
		t:       t,
		url:     "ws://" + lbAddr + "/notify/ws",
		rdb:     rdb,
		dialSem: make(chan struct{}, 64),
		ctx:     ctx,
		cancel:  cancel,
		starts:  []time.Time{{}},
	}
	for u := range users {
		user := fmt.Sprintf("user-%04d", u)
		w.users = append(w.users, user)
		tok := userToken(t, user)
		for range perUser {
			w.clients = append(w.clients, newClient(w, len(w.clients), user, tok))
		}
	}
	t.Cleanup(w.stop)
	return w
}

// userToken is a client token of user, valid for the test.
func userToken(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.Sign(auth.Config{Secret: jwtSecret}, user, nil, 2*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// addClient adds one more client of user, not connected yet (before
// connect); resume makes it an envelope client that resumes from the last
// cursor it saw on every reconnect.
func (w *world) addClient(user string, resume bool) *client {
	c := newClient(w, len(w.clients), user, userToken(w.t, user))
	c.resume = resume
	w.clients = append(w.clients, c)
	return c
}

// connect starts every client and waits until each has a session.
func (w *world) connect(t *testing.T) {
	t.Helper()
	for _, c := range w.clients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			c.run(w.ctx)
		}()
	}
	w.waitFor(t, "every client connected", 90*time.Second, func(c *client) string {
		if _, open := c.current(); !open {
			return "not connected"
		}
		return ""
	})
}

// stop closes every client and waits for their goroutines.
func (w *world) stop() {
	w.cancel()
	for _, c := range w.clients {
		c.close()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		w.t.Errorf("clients did not stop within 15s")
	}
}

// publish sends the next sequence number to every user, pipelined (or
// however send does).
func (w *world) publish(ctx context.Context) error {
	w.pubMu.Lock()
	defer w.pubMu.Unlock()
	w.mu.Lock()
	w.seq++
	q := w.seq
	w.starts = append(w.starts, time.Now())
	w.mu.Unlock()
	if w.send != nil {
		return w.send(ctx, q)
	}
	pipe := w.rdb.Pipeline()
	for _, u := range w.users {
		pipe.Publish(ctx, "notify:"+u, u+":"+strconv.Itoa(q))
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (w *world) lastSeq() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq
}

// firstAfter is the first sequence number whose publish began after t, or 0.
func (w *world) firstAfter(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := sort.Search(len(w.starts)-1, func(i int) bool { return w.starts[i+1].After(t) }) + 1
	if i < len(w.starts) {
		return i
	}
	return 0
}

// lastBefore is the last sequence number whose publish began before t, or 0.
func (w *world) lastBefore(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := sort.Search(len(w.starts)-1, func(i int) bool { return !w.starts[i+1].Before(t) })
	return i
}

func (w *world) publishedAt(q int) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.starts[q]
}

// ticker publishes every interval until the returned stop is called. stop
// waits for a publish under way: a sequence number is never left half sent.
func (w *world) ticker(t *testing.T, every time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tk.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := w.publish(ctx)
			cancel()
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	t.Cleanup(stop) // also when the test ends early
	return stop
}

// round publishes n sequence numbers and waits until every connection got
// them all.
func (w *world) round(t *testing.T, n int) {
	t.Helper()
	for range n {
		ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
		err := w.publish(ctx)
		cancel()
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	last := w.lastSeq()
	w.waitFor(t, fmt.Sprintf("every connection received up to #%d", last), 20*time.Second, func(c *client) string {
		c.mu.Lock()
		defer c.mu.Unlock()
		s := c.sessions[len(c.sessions)-1]
		switch {
		case s.closed:
			return "disconnected"
		case len(s.seqs) == 0:
			return "received nothing"
		case s.seqs[len(s.seqs)-1] != last:
			return fmt.Sprintf("last received #%d", s.seqs[len(s.seqs)-1])
		}
		return ""
	})
}

// waitFor polls until pending reports "" for every client, or fails the
// test listing some of those still pending.
func (w *world) waitFor(t *testing.T, what string, timeout time.Duration, pending func(*client) string) {
	t.Helper()
	if await.Poll(timeout, func() bool { n, _ := w.pendingClients(pending, 0); return n == 0 }) {
		return
	}
	if n, waiting := w.pendingClients(pending, 10); n > 0 {
		t.Fatalf("after %s, %d clients are not there yet (%s):\n  %s", timeout, n, what, strings.Join(waiting, "\n  "))
	}
}

// pendingClients counts the clients for which pending reports a reason, and
// describes up to show of them.
func (w *world) pendingClients(pending func(*client) string, show int) (n int, waiting []string) {
	for _, c := range w.clients {
		if why := pending(c); why != "" {
			n++
			if len(waiting) < show {
				waiting = append(waiting, fmt.Sprintf("%v: %s [%s]", c, why, c.describe()))
			}
		}
	}
	return n, waiting
}

// describe summarizes a client for failure messages.
func (c *client) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%d sessions", len(c.sessions))
	for i, s := range c.sessions[max(0, len(c.sessions)-3):] {
		fmt.Fprintf(&b, "; #%d via %s on %s, %d msgs", len(c.sessions)-min(3, len(c.sessions))+i, s.lb, s.node, len(s.seqs))
		if s.closed {
			fmt.Fprintf(&b, ", closed %d %q", s.code, s.reason)
		}
	}
	if c.dialErrs > 0 {
		fmt.Fprintf(&b, "; %d failed dials, last: %s", c.dialErrs, c.lastErr)
	}
	if len(c.bad) > 0 {
		fmt.Fprintf(&b, "; violations: %q", c.bad)
	}
	return b.String()
}

// waitSettled waits until every client is connected to its user's owner
// (and, when receiving is set, has received a message published after its
// session began): the cluster has settled.
func (w *world) waitSettled(t *testing.T, r *ring.Ring, timeout time.Duration, receiving bool) {
	t.Helper()
	w.waitFor(t, fmt.Sprintf("on their owners per the ring of %v", r.Members()), timeout, func(c *client) string {
		s, open := c.current()
		if !open {
			return "not connected"
		}
		if owner := r.Locate(c.user); s.node != owner {
			return fmt.Sprintf("served by %s, owner %s", s.node, owner)
		}
		if receiving {
			c.mu.Lock()
			n := len(s.seqs)
			last := 0
			if n > 0 {
				last = s.seqs[n-1]
			}
			c.mu.Unlock()
			if n == 0 || w.publishedAt(last).Before(s.ready) {
				return "no message published after it connected yet"
			}
		}
		return ""
	})
}

// verify checks every session of every client so far:
//   - sequence numbers are consecutive: no loss, no duplicate, in order;
//   - the first one published after the session was ready arrived (or an
//     earlier one: nothing published after the state frame is lost);
//   - an open session has everything up to the last one published;
//   - a closed session has everything published well before it closed:
//     more than a second before, plus the delivery latency clients saw
//     around then (a loaded machine delays deliveries and what this
//     process sees, closes included; a message still in flight when a
//     server closes is not owed).
func (w *world) verify(t *testing.T) {
	t.Helper()
	last := w.lastSeq()
	all := w.sessionsSoFar()
	latency := w.latencies(all)
	var problems []string
	nproblems, nsessions, nmsgs := 0, 0, 0
	for ci, c := range w.clients {
		c.mu.Lock()
		bad := slices.Clone(c.bad)
		c.mu.Unlock()
		sessions := all[ci]
		report := func(format string, args ...any) {
			nproblems++
			if len(problems) < 20 {
				problems = append(problems, fmt.Sprintf("%v: ", c)+fmt.Sprintf(format, args...))
			}
		}
		for _, b := range bad {
			report("%s", b)
		}
		for i, s := range sessions {
			nsessions++
			nmsgs += len(s.seqs)
			w.verifySession(i, s, last, latency, report)
		}
	}
	if nproblems > 0 {
		t.Errorf("%d delivery problems in %d sessions (%d messages received); first ones:\n  %s",
			nproblems, nsessions, nmsgs, strings.Join(problems, "\n  "))
		return
	}
	t.Logf("delivery verified: %d sessions, %d messages received, #1..#%d published to %d users", nsessions, nmsgs, last, len(w.users))
}

// sessionsSoFar copies every client's sessions, per client.
func (w *world) sessionsSoFar() [][]session {
	all := make([][]session, len(w.clients))
	for i, c := range w.clients {
		c.mu.Lock()
		for _, s := range c.sessions {
			cp := *s
			cp.seqs, cp.at, cp.cursors = slices.Clone(s.seqs), slices.Clone(s.at), slices.Clone(s.cursors)
			all[i] = append(all[i], cp)
		}
		c.mu.Unlock()
	}
	return all
}

// verifySession reports what is wrong with session i of a client (see
// verify), last being the last sequence number published and latency that
// of latencies.
func (w *world) verifySession(i int, s session, last int, latency func(time.Time) time.Duration, report func(format string, args ...any)) {
	where := fmt.Sprintf("session %d (via %s on %s", i, s.lb, s.node)
	if s.closed {
		where += fmt.Sprintf(", closed %d %q", s.code, s.reason)
	}
	where += ")"
	for j := 1; j < len(s.seqs); j++ {
		if s.seqs[j] != s.seqs[j-1]+1 {
			report("%s: #%d after #%d", where, s.seqs[j], s.seqs[j-1])
			break
		}
	}
	// When, before the close, a message must have been published
	// to be owed: a second, plus the worst delivery latency seen
	// in the seconds before, plus this handshake's duration.
	var owedBy time.Time
	if s.closed {
		lag := max(s.ready.Sub(s.start), latency(s.closedAt))
		owedBy = s.closedAt.Add(-time.Second - lag)
	}
	want := w.firstAfter(s.ready) // 0: none published since
	if s.closed && want != 0 && !w.publishedAt(want).Before(owedBy) {
		want = 0 // published too close to the end to be owed
	}
	if want != 0 && (len(s.seqs) == 0 || s.seqs[0] > want) {
		got := "nothing"
		if len(s.seqs) > 0 {
			got = fmt.Sprintf("#%d first", s.seqs[0])
		}
		report("%s: lost #%d, published %s after the session was ready; received %s",
			where, want, w.publishedAt(want).Sub(s.ready).Round(time.Millisecond), got)
		return
	}
	owed := last
	if s.closed {
		owed = w.lastBefore(owedBy)
	}
	if n := len(s.seqs); want != 0 && owed >= want && s.seqs[n-1] < owed {
		report("%s: last received #%d (%s after its publish), want at least #%d (published %s before the close was seen)",
			where, s.seqs[n-1], s.at[n-1].Sub(w.publishedAt(s.seqs[n-1])).Round(time.Millisecond),
			owed, s.closedAt.Sub(w.publishedAt(owed)).Round(time.Millisecond))
	}
}

// latencies returns, for a moment, the worst publish-to-receive latency of
// the messages received in the 3 s before it (by any connection).
func (w *world) latencies(all [][]session) func(time.Time) time.Duration {
	const bucket = 100 * time.Millisecond
	w.mu.Lock()
	starts := slices.Clone(w.starts)
	w.mu.Unlock()
	worst := map[int64]time.Duration{} // bucket of arrival -> worst latency
	for _, sessions := range all {
		for _, s := range sessions {
			for j, q := range s.seqs {
				b := s.at[j].UnixNano() / int64(bucket)
				worst[b] = max(worst[b], s.at[j].Sub(starts[q]))
			}
		}
	}
	return func(t time.Time) time.Duration {
		var d time.Duration
		end := t.UnixNano() / int64(bucket)
		for b := end - int64(3*time.Second/bucket); b <= end+1; b++ {
			d = max(d, worst[b])
		}
		return d
	}
}

// ---- marks and the closes seen since ----

// mark is the state of every client at one moment.
type mark struct {
	at       time.Time
	closes   []int      // len(c.closes) per client
	sessions []*session // session open at the mark, per client
}

func (w *world) mark(t *testing.T) mark {
	t.Helper()
	m := mark{at: time.Now()}
	for _, c := range w.clients {
		s, open := c.current()
		if !open {
			t.Fatalf("%v is not connected at the start of the step", c)
		}
		c.mu.Lock()
		m.closes = append(m.closes, len(c.closes))
		c.mu.Unlock()
		m.sessions = append(m.sessions, s)
	}
	return m
}

func (c *client) closesSince(m mark) []closeEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.closes[m.closes[c.idx]:])
}

// expectation is the closes a client must see in a step: none when first is
// empty; else at least one, the first of a kind in first, every later one
// "moved" (a reconnect that raced a ring change lands on a node that is not
// the owner in the end, and is moved on).
type expectation struct {
	first []string
	why   string
}

var expectNone = expectation{why: "untouched"}

// checkCloses compares the closes since m with what expect says, and
// returns how many clients saw each first kind.
func (w *world) checkCloses(t *testing.T, m mark, expect func(c *client, s *session) expectation) map[string]int {
	t.Helper()
	firsts := map[string]int{}
	var problems []string
	n := 0
	for _, c := range w.clients {
		e := expect(c, m.sessions[c.idx])
		evs := c.closesSince(m)
		var kinds []string
		for _, ev := range evs {
			kinds = append(kinds, ev.kind()+" from "+ev.node+" via "+ev.lb)
		}
		var bad string
		switch {
		case len(e.first) == 0 && len(evs) > 0:
			bad = "was disconnected"
		case len(e.first) > 0 && len(evs) == 0:
			bad = fmt.Sprintf("was not disconnected (want %v)", e.first)
		case len(evs) > 0 && !slices.Contains(e.first, evs[0].kind()):
			bad = fmt.Sprintf("first close %s, want one of %v", evs[0].kind(), e.first)
		default:
			for _, ev := range evs[min(1, len(evs)):] {
				if ev.kind() != "moved" {
					bad = fmt.Sprintf("a later close is %s, want moved", ev.kind())
				}
			}
		}
		if len(evs) > 0 {
			firsts[evs[0].kind()]++
		}
		if bad != "" {
			n++
			if len(problems) < 20 {
				s := m.sessions[c.idx]
				problems = append(problems, fmt.Sprintf("%v (%s; was via %s on %s): %s; closes: %v", c, e.why, s.lb, s.node, bad, kinds))
			}
		}
	}
	if n > 0 {
		t.Errorf("%d clients saw the wrong closes; first ones:\n  %s", n, strings.Join(problems, "\n  "))
	}
	return firsts
}

// ---- the cluster as the nodes and haproxy report it ----

func newRing(t *testing.T, names ...string) *ring.Ring {
	t.Helper()
	r, err := ring.New(ring.DefaultConfig(), names)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitRing waits until every live node's /cluster shows exactly want as
// members and on its ring.
func waitRing(t *testing.T, live []*node, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range live {
		var st clusterStatus
		var err error
		if !await.Poll(time.Until(deadline), func() bool {
			st, err = n.cluster("")
			return err == nil && slices.Equal(st.Ring.Members, want) && slices.Equal(st.memberNames(), want)
		}) {
			t.Fatalf("%s: ring %v, members %v (%v); want %v", n.name, st.Ring.Members, st.memberNames(), err, want)
		}
	}
}

// checkCluster checks every live node's /cluster against the expected ring
// r, and asks them in turn for the owner of every user.
func (w *world) checkCluster(t *testing.T, live []*node, r *ring.Ring) {
	t.Helper()
	cfg := ring.DefaultConfig()
	for _, n := range live {
		st, err := n.cluster("")
		if err != nil {
			t.Fatal(err)
		}
		if st.Node.Name != n.name || !st.Node.Joined || st.Node.Draining {
			t.Errorf("%s: /cluster node %+v", n.name, st.Node)
		}
		if st.Ring.Hash != cfg.Hash() || st.Ring.Partitions != cfg.Partitions || !slices.Equal(st.Ring.Members, r.Members()) {
			t.Errorf("%s: /cluster ring %+v, want members %v, hash %s, %d partitions", n.name, st.Ring, r.Members(), cfg.Hash(), cfg.Partitions)
		}
		total := 0
		for _, m := range st.Members {
			peer := nodeNamed(live, m.Name)
			switch {
			case peer == nil:
				t.Errorf("%s: /cluster lists %s, which is not running", n.name, m.Name)
			case m.State != "alive" || !m.OnRing || m.RingHash != cfg.Hash() || m.RelayAddr != peer.addr || m.GossipAddr != peer.gossip:
				t.Errorf("%s: /cluster member %+v; want alive, on the ring, relay %s, gossip %s", n.name, m, peer.addr, peer.gossip)
			case m.Partitions != r.Owned(m.Name):
				t.Errorf("%s: /cluster says %s owns %d partitions, the ring package %d", n.name, m.Name, m.Partitions, r.Owned(m.Name))
			}
			total += m.Partitions
		}
		if total != cfg.Partitions {
			t.Errorf("%s: members own %d partitions in all, want %d", n.name, total, cfg.Partitions)
		}
	}
	w.checkOwners(t, live, r)
}

// checkOwners: every user's owner, asked of the nodes in turn, is the one
// of ring r.
func (w *world) checkOwners(t *testing.T, live []*node, r *ring.Ring) {
	t.Helper()
	type answer struct {
		user string
		err  error
	}
	users := make(chan int)
	answers := make(chan answer)
	for range 8 {
		go func() {
			for i := range users {
				u, n := w.users[i], live[i%len(live)]
				st, err := n.cluster(u)
				switch {
				case err != nil:
				case st.User == nil || st.User.ID != u:
					err = fmt.Errorf("%s: /cluster?user=%s: %+v", n.name, u, st.User)
				case st.User.Owner != r.Locate(u) || st.User.Partition != r.Partition(u):
					err = fmt.Errorf("%s: /cluster?user=%s: owner %s partition %d; the ring package says %s, %d",
						n.name, u, st.User.Owner, st.User.Partition, r.Locate(u), r.Partition(u))
				}
				answers <- answer{u, err}
			}
		}()
	}
	go func() {
		for i := range w.users {
			users <- i
		}
		close(users)
	}()
	var errs []string
	for range w.users {
		if a := <-answers; a.err != nil && len(errs) < 10 {
			errs = append(errs, a.err.Error())
		}
	}
	if len(errs) > 0 {
		t.Errorf("owners from /cluster?user=:\n  %s", strings.Join(errs, "\n  "))
	}
}

func nodeNamed(nodes []*node, name string) *node {
	for _, n := range nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// checkMetrics waits until each live node's gauges match what the clients
// see: connections it serves, connections it relays, cluster members.
func (w *world) checkMetrics(t *testing.T, live []*node) {
	t.Helper()
	served, relayed := map[string]int{}, map[string]int{}
	for _, c := range w.clients {
		s, _ := c.current()
		served[s.node]++
		if s.lb != s.node {
			relayed[s.lb]++
		}
	}
	var diffs []string
	if await.Poll(15*time.Second, func() bool {
		diffs = nil
		for _, n := range live {
			m, scrapeErr := n.scrape()
			check := func(name string, want int, labels ...string) {
				got, err := 0.0, scrapeErr
				if err == nil {
					got, err = m.sum(name, labels...)
				}
				if err != nil || int(got) != want {
					diffs = append(diffs, fmt.Sprintf("%s: %s%v = %v (%v), want %d", n.name, name, labels, got, err, want))
				}
			}
			check("notify_connections", served[n.name], "transport", "websocket")
			check("notify_forwarded_connections", relayed[n.name])
			check("notify_cluster_members", len(live))
		}
		return len(diffs) == 0
	}) {
		return
	}
	t.Errorf("metrics disagree with the clients:\n  %s", strings.Join(diffs, "\n  "))
}

// sumMetric adds a counter over nodes.
func sumMetric(t *testing.T, nodes []*node, name string) int {
	t.Helper()
	sum := 0.0
	for _, n := range nodes {
		v, err := n.metric(name)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return int(sum)
}

//go:build linux && fault

package fault

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/ring"
)

// scale is the size of a run.
type scale struct {
	name        string
	users       int // users published to
	perUser     int // connections per user
	resumeUsers int // of them, published with FCALL notify_publish, their clients resuming
	rate        int // messages per second in all
	short       bool
}

var (
	// The load: 1,000 users, 3,000 connections, 2,000 messages/s.
	fullScale = scale{name: "full", users: 1000, perUser: 3, resumeUsers: 100, rate: 2000}
	// make test's subset: a fifth of it, with shorter holds.
	shortScale = scale{name: "short", users: 200, perUser: 3, resumeUsers: 20, rate: 400, short: true}
)

// options change one scenario's cluster.
type options struct {
	stopperUsers int      // the last users' clients join the bulk topic (scenario 7)
	nodeEnv      []string // more settings for every node
}

// cluster is one scenario's processes and clients: redis-server, three
// nodes and haproxy, each node and Redis in its own namespace.
type cluster struct {
	t         *testing.T
	sc        scale
	opts      options
	tp        *topology
	dir       string
	gossipKey string
	redis     *redisProc
	nodes     []*nodeProc // the nodes in the cluster now
	allNodes  []*nodeProc
	lb        *haproxy
	w         *world
	began     time.Time
}

// newCluster starts everything, connects every client through haproxy,
// starts the publisher, and waits until every client receives.
func newCluster(t *testing.T, sc scale, opts options) *cluster {
	t.Helper()
	tp := sharedTopology(t)
	c := &cluster{t: t, sc: sc, opts: opts, tp: tp, dir: t.TempDir(), gossipKey: newGossipKey(t), began: time.Now()}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.allNodes {
				if n.p != nil {
					t.Logf("---- %s log (last lines):\n%s", n.name, n.p.tail(25))
				}
			}
		}
	})
	c.redis = startRedis(t, tp, c.dir)
	for _, name := range []string{"n1", "n2", "n3"} {
		h := tp.host(name)
		c.nodes = append(c.nodes, &nodeProc{
			name: name, h: h,
			addr:   net.JoinHostPort(h.ip, httpPort),
			gossip: net.JoinHostPort(h.ip, gossipPort),
			pprof:  net.JoinHostPort(h.ip, pprofPort),
		})
	}
	c.allNodes = slices.Clone(c.nodes)
	for _, n := range c.nodes {
		c.startNode(n)
	}
	c.waitWhole(t, 30*time.Second)
	c.lb = c.startHAProxy()
	c.waitHAProxy(t, names(c.nodes)...)
	c.w = newWorld(c)
	start := time.Now()
	for _, cl := range c.w.clients {
		cl.start()
	}
	c.waitClients(t, "connected", 60*time.Second, func(cl *client) bool { _, open := cl.current(); return open })
	connected := time.Since(start)
	c.w.startPublisher()
	c.waitReceiving(t, time.Now(), 30*time.Second)
	t.Logf("%s scale: redis, 3 nodes, haproxy; %d clients of %d users (%d resuming) connected in %s; publishing %d messages/s",
		sc.name, len(c.w.clients), sc.users, sc.resumeUsers*sc.perUser, connected.Round(time.Millisecond), sc.rate)
	return c
}

func names(nodes []*nodeProc) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

func (c *cluster) node(name string) *nodeProc {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	panic("no node " + name)
}

// whole reports whether every node lists all three as alive members on its ring.
func (c *cluster) whole() bool {
	want := names(c.nodes)
	for _, n := range c.nodes {
		st, err := n.cluster()
		if err != nil {
			return false
		}
		m, alive := st.members()
		r := slices.Sorted(slices.Values(st.Ring.Members))
		if !alive || !slices.Equal(m, want) || !slices.Equal(r, want) {
			return false
		}
	}
	return true
}

func (c *cluster) waitWhole(t *testing.T, timeout time.Duration) {
	t.Helper()
	if !await.Poll(timeout, c.whole) {
		var views []string
		for _, n := range c.nodes {
			st, err := n.cluster()
			m, _ := st.members()
			views = append(views, fmt.Sprintf("%s: members %v ring %v %v", n.name, m, st.Ring.Members, err))
		}
		t.Fatalf("the nodes are not one cluster after %s:\n  %s", timeout, strings.Join(views, "\n  "))
	}
}

func (c *cluster) waitHAProxy(t *testing.T, up ...string) {
	t.Helper()
	var st map[string]string
	var err error
	if !await.Poll(startTimeout, func() bool {
		if st, err = c.lb.servers(); err != nil {
			return false
		}
		for name, s := range st {
			if strings.HasPrefix(s, "UP") != slices.Contains(up, name) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("haproxy: servers %v (%v), want exactly %v up", st, err, up)
	}
}

// waitClients waits until ok holds for every client but the stoppers.
func (c *cluster) waitClients(t *testing.T, what string, timeout time.Duration, ok func(*client) bool) {
	t.Helper()
	var pending []string
	n := 0
	if await.Poll(timeout, func() bool {
		pending, n = nil, 0
		for _, cl := range c.w.clients {
			if cl.kind == kindStopper && cl.halted() {
				continue
			}
			if !ok(cl) {
				n++
				if len(pending) < 5 {
					pending = append(pending, cl.String()+": "+cl.describe())
				}
			}
		}
		return n == 0
	}) {
		return
	}
	t.Fatalf("after %s, %d clients are not %s:\n  %s", timeout, n, what, strings.Join(pending, "\n  "))
}

// waitReceiving waits until every open client has received a message
// published after since.
func (c *cluster) waitReceiving(t *testing.T, since time.Time, timeout time.Duration) {
	t.Helper()
	c.waitClients(t, "receiving messages published after "+since.Format("15:04:05.000"), timeout, func(cl *client) bool {
		return cl.receivedAfter(since)
	})
}

// receivedAfter: the open session has a message published after t.
func (c *client) receivedAfter(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sessions) == 0 || c.conn == nil {
		return false
	}
	s := c.sessions[len(c.sessions)-1]
	if len(s.seqs) == 0 {
		return false
	}
	q := int(s.seqs[len(s.seqs)-1])
	c.w.pubMu.RLock()
	defer c.w.pubMu.RUnlock()
	return q <= len(c.u.pubAt) && c.u.pubAt[q-1] >= t.UnixNano()
}

func (c *client) halted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.halt
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
	if len(c.fails) > 0 {
		fmt.Fprintf(&b, "; %d failed dials, last: %s", len(c.fails), c.fails[len(c.fails)-1].err)
	}
	return b.String()
}

// catchUp waits (up to timeout) until every open client has received a
// message published after t1: what was published before has then arrived,
// if it is going to (each connection is in order). A wait longer than a
// few seconds is logged, with the clients still behind.
func (c *cluster) catchUp(t1 time.Time, timeout time.Duration) {
	start := time.Now()
	behind := func() (n int, ex []string) {
		for _, cl := range c.w.clients {
			if cl.kind == kindStopper {
				continue
			}
			if _, open := cl.current(); open && !cl.receivedAfter(t1) {
				n++
				if len(ex) < 3 {
					ex = append(ex, cl.String()+": "+cl.describe())
				}
			}
		}
		return n, ex
	}
	ok := await.Poll(timeout, func() bool { n, _ := behind(); return n == 0 })
	if d := time.Since(start); d > 3*time.Second || !ok {
		n, ex := behind()
		c.t.Logf("catching up took %s (%d clients still behind: %v)", d.Round(100*time.Millisecond), n, ex)
	}
}

// sumMetric adds a metric over the running nodes.
func (c *cluster) sumMetric(name string, labels ...string) float64 {
	sum := 0.0
	for _, n := range c.nodes {
		if n.p != nil && !n.p.exited() {
			sum += n.metric(name, labels...)
		}
	}
	return sum
}

// ringOf is the ring of the given members.
func ringOf(t *testing.T, members ...string) *ring.Ring {
	t.Helper()
	r, err := ring.New(ring.DefaultConfig(), members)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ---- CPU ----

// cpuMark is the CPU used so far by this process and the children.
type cpuMark struct {
	at    time.Time
	self  time.Duration
	procs map[string]time.Duration
}

func (c *cluster) cpuMark() cpuMark {
	m := cpuMark{at: time.Now(), procs: map[string]time.Duration{}}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		m.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, n := range c.allNodes {
		m.procs[n.name] = cpuOf(n.all)
	}
	m.procs["redis"] = cpuOf(c.redis.all)
	if c.lb != nil {
		m.procs["haproxy"] = c.lb.p.cpu()
	}
	return m
}

// cpuSince says how much of one core each process used since m.
func (c *cluster) cpuSince(m cpuMark) string {
	now := c.cpuMark()
	wall := now.at.Sub(m.at)
	pct := func(d time.Duration) string { return fmt.Sprintf("%.0f%%", 100*d.Seconds()/wall.Seconds()) }
	parts := []string{"load generator (this process: clients, publisher, checks) " + pct(now.self-m.self)}
	for _, name := range []string{"n1", "n2", "n3", "redis", "haproxy"} {
		d := now.procs[name] - m.procs[name]
		parts = append(parts, name+" "+pct(d))
	}
	return fmt.Sprintf("CPU over %s, share of one core (2 cores): %s", wall.Round(time.Second), strings.Join(parts, ", "))
}

// sendQueues totals, per namespace, the bytes TCP sockets hold unsent
// (Send-Q) and unread (Recv-Q).
func (c *cluster) sendQueues() map[string][2]int {
	out := map[string][2]int{}
	for _, h := range []string{"", "n1", "n2", "n3"} {
		args := []string{"-tn"}
		label := "root (haproxy, clients)"
		if h != "" {
			args = append([]string{"-N", c.tp.host(h).ns}, args...)
			label = h
		}
		b, _ := exec.Command("ss", args...).Output()
		var q [2]int
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) < 5 {
				continue
			}
			r, _ := strconv.Atoi(f[1])
			s, _ := strconv.Atoi(f[2])
			q[0], q[1] = q[0]+s, q[1]+r
		}
		out[label] = q
	}
	return out
}

// queueWatch keeps the largest sendQueues totals seen.
type queueWatch struct {
	stop context.CancelFunc
	done chan struct{}
	peak map[string][2]int
}

func (c *cluster) watchSendQueues(every time.Duration) *queueWatch {
	ctx, cancel := context.WithCancel(context.Background())
	q := &queueWatch{stop: cancel, done: make(chan struct{}), peak: map[string][2]int{}}
	go func() {
		defer close(q.done)
		for {
			for k, v := range c.sendQueues() {
				p := q.peak[k]
				q.peak[k] = [2]int{max(p[0], v[0]), max(p[1], v[1])}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	}()
	return q
}

func (q *queueWatch) end() string {
	q.stop()
	<-q.done
	var parts []string
	for _, k := range slices.Sorted(mapsKeys(q.peak)) {
		parts = append(parts, fmt.Sprintf("%s unsent %.1f MiB, unread %.1f MiB", k, float64(q.peak[k][0])/mib, float64(q.peak[k][1])/mib))
	}
	return strings.Join(parts, "; ")
}

//go:build linux && fault

package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/ring"
)

// pick returns the full-scale duration, or the short one in make test.
func pick(sc scale, full, short time.Duration) time.Duration {
	if sc.short {
		return short
	}
	return full
}

// 1. One node cut off from the other two (both directions; Redis, haproxy
// and the clients still reach it) for 20 s, then healed.
func partitionNode(t *testing.T, sc scale, s *scenario) {
	hold := pick(sc, 20*time.Second, 10*time.Second)
	c := newCluster(t, sc, options{})
	victim, others := "n3", []string{"n1", "n2"}
	full, sideV, sideO := ringOf(t, "n1", "n2", "n3"), ringOf(t, victim), ringOf(t, others...)
	cpu := c.cpuMark()
	rb0 := c.sumMetric("notify_rebalance_closes_total")
	t0 := time.Now()
	views := c.watchViews(250 * time.Millisecond)

	p := time.Now()
	heal := c.tp.partition(t, []string{victim}, others)
	split := await.Poll(hold, func() bool {
		st, err := c.node(victim).cluster()
		m, _ := st.members()
		return err == nil && slices.Equal(m, []string{victim})
	})
	splitAfter := time.Since(p)
	sleep(c.w.ctx, time.Until(p.Add(hold)))
	h := time.Now()
	heal()
	merged := await.Poll(90*time.Second, c.whole)
	mergeTook := time.Since(h)
	_, deaths, viewDesc := views.end()
	if split {
		s.note("the split: %s saw only itself %.1fs after the cut; views: %s", victim, splitAfter.Seconds(), viewDesc)
	} else {
		s.note("%s never saw itself alone during the %s partition; views: %s", victim, hold, viewDesc)
	}
	s.bound(merged && mergeTook <= 30*time.Second, "one cluster again (every /cluster lists n1-n3 alive, on the ring) %.1fs after the heal [bound 30 s]", mergeTook.Seconds())

	c.waitRebalanceQuiet(3*time.Second, 60*time.Second)
	c.waitClients(t, "connected", 30*time.Second, func(cl *client) bool { _, open := cl.current(); return open })
	t1 := time.Now()
	c.catchUp(t1, 30*time.Second)
	tl := c.w.tally(window{t0, t1}, nil)
	s.bound(tl.lostOpen == 0, "lost 0 for connections that stayed open: %d lost by the %d clients whose connection stayed open [bound 0]", tl.lostOpen, tl.openClients)

	// Each side delivered to its own clients during the partition: a
	// connection whose path stays on one side got what was published
	// during the hold before the heal. Relays across the cut get theirs
	// when TCP retransmits after it.
	late, checked, crossing, crossLag, lateEx := sideDelivery(c, p, h, victim)
	s.bound(late == 0, "each side kept delivering to its own clients: %d messages published during the partition reached one of the %d connections that stay on one side only after the heal (or never) %v", late, checked, lateEx)
	s.note("%d connections were relayed across the cut; what was published to them during it arrived up to %.1fs after the heal", crossing, crossLag.Seconds())

	// A "moved" close is for a user whose owner changed in the view of the
	// node that served it (its side's ring during the partition, the whole
	// ring after).
	bad, fixes, badEx := movedCloses(c, t0, full, sideV, sideO, victim)
	changed := 0 // users n1 or n2 owned that the other one owns in their ring (bounded load)
	for _, u := range c.w.users {
		if o := full.Locate(u.id); o != victim && o != sideO.Locate(u.id) {
			changed++
		}
	}
	s.bound(bad == 0, "rebalance closes only users whose owner changed: %d moved closes of users their node owned throughout %v (%d moves of clients served away from their owner; the ring of n1, n2 gives %d of the users n1 or n2 owned to the other one)",
		bad, badEx, fixes, changed)
	s.note("rebalance closes (metric): %.0f; clients saw %s; %d member deaths seen in the views", c.sumMetric("notify_rebalance_closes_total")-rb0, kinds(tl.closes), deaths)
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, mergeTook)
}

// sideDelivery checks that each side of the partition (p to h, victim
// alone) delivered to its own clients: of the connections that stayed
// open and on one side, the messages published during the hold that came
// only after the heal (or never); and how far behind the connections
// relayed across the cut got theirs.
func sideDelivery(c *cluster, p, h time.Time, victim string) (late, checked, crossing int, crossLag time.Duration, lateEx []string) {
	at, ok := c.w.pubLog()
	side := func(n string) bool { return n == victim }
	for _, cl := range c.w.clients {
		ss := cl.snapshot()
		sp, sh := sessionAt(ss, p), sessionAt(ss, h)
		if sp == nil || sp != sh && (sh == nil || sp.start != sh.start) {
			continue // it reconnected meanwhile
		}
		pubs, oks := at[cl.u.idx], ok[cl.u.idx]
		arrived := map[int32]int64{}
		for j, q := range sp.seqs {
			arrived[q] = sp.at[j]
		}
		cross := side(sp.lb) != side(sp.node)
		if cross {
			crossing++
		} else {
			checked++
		}
		for i, pub := range pubs {
			if pub < p.Add(time.Second).UnixNano() || pub > h.Add(-time.Second).UnixNano() || !oks[i] {
				continue
			}
			a, got := arrived[int32(i+1)]
			if cross {
				if got {
					crossLag = max(crossLag, c.w.at(a).Sub(h))
				}
				continue
			}
			if !got || c.w.at(a).After(h) {
				late++
				if len(lateEx) < 5 {
					lateEx = append(lateEx, fmt.Sprintf("%v via %s on %s: #%d", cl, sp.lb, sp.node, i+1))
				}
			}
		}
	}
	return late, checked, crossing, crossLag, lateEx
}

// movedCloses counts the "moved" closes since t0 of users whose owner did
// not change in the view of the node that served them (bad), and those of
// clients served away from their owner (fixes).
func movedCloses(c *cluster, t0 time.Time, full, sideV, sideO *ring.Ring, victim string) (bad, fixes int, badEx []string) {
	for _, cl := range c.w.clients {
		for _, ss := range cl.snapshot() {
			if !ss.closed || ss.closedAt.Before(t0) || closeKind(ss.code, ss.reason) != "moved" {
				continue
			}
			sideRing := sideO
			if ss.node == victim {
				sideRing = sideV
			}
			switch {
			case full.Locate(cl.u.id) != sideRing.Locate(cl.u.id):
			case full.Locate(cl.u.id) != ss.node:
				fixes++ // it was served by a non-owner (the owner was unreachable): moved to it
			default:
				bad++
				if len(badEx) < 5 {
					badEx = append(badEx, fmt.Sprintf("%v on %s (owner %s throughout)", cl, ss.node, ss.node))
				}
			}
		}
	}
	return bad, fixes, badEx
}

// 2. One node cut off from Redis only: unready within the probe timeout,
// out of haproxy, its clients kept, delivery back within 2 s of the heal.
func partitionRedis(t *testing.T, sc scale, s *scenario) {
	hold := pick(sc, 15*time.Second, 5*time.Second)
	c := newCluster(t, sc, options{})
	victim := c.node("n2")
	cpu := c.cpuMark()
	t0 := time.Now()
	p := time.Now()
	heal := c.tp.partition(t, []string{victim.name}, []string{"r"})
	unready := await.Poll(10*time.Second, func() bool {
		code, _, err := victim.get("/readyz")
		return err == nil && code == 503
	})
	unreadyAfter := time.Since(p)
	// The probe: one every broker.DefaultProbeInterval; not ready once none
	// came back for broker.DefaultProbeTimeout. Polling adds up to 50 ms
	// and a request's time.
	limit := broker.DefaultProbeTimeout + 200*time.Millisecond
	s.bound(unready && unreadyAfter <= limit, "%s's /readyz is 503 %.2fs after the cut [bound: the probe timeout, %s (broker.DefaultProbeTimeout), +0.2 s of polling]",
		victim.name, unreadyAfter.Seconds(), broker.DefaultProbeTimeout)
	out := await.Poll(10*time.Second, func() bool { return !c.lb.up(victim.name) })
	s.bound(out, "haproxy takes %s out: DOWN %.2fs after the cut", victim.name, time.Since(p).Seconds())
	// Its clients: served by it, or relayed through it.
	affected := map[*client]bool{}
	for _, cl := range c.w.clients {
		if lb, node, ok := cl.pathAt(p); ok && (lb == victim.name || node == victim.name) {
			affected[cl] = true
		}
	}
	sleep(c.w.ctx, time.Until(p.Add(hold)))
	h := time.Now()
	heal()
	c.waitClients(t, "receiving after the heal", 30*time.Second, func(cl *client) bool { return cl.receivedAfter(h) })
	res := c.w.resumedAfter(h, func(cl *client) bool {
		s, _ := cl.current()
		return s != nil && s.node == victim.name
	})
	back := await.Poll(20*time.Second, victim.ready)
	readyAfter := time.Since(h)
	inLB := await.Poll(10*time.Second, func() bool { return c.lb.up(victim.name) })
	s.note("after the heal: /readyz 200 again after %.2fs (%v), haproxy UP after %.2fs (%v)", readyAfter.Seconds(), back, time.Since(h).Seconds(), inLB)
	resume := res.worst(victim.name)
	s.bound(res.perNode[victim.name] > 0 && resume <= 2*time.Second, "delivery to %s's clients resumes %.2fs after the heal [bound 2 s]; %s", victim.name, resume.Seconds(), res)

	sleep(c.w.ctx, 2*time.Second)
	t1 := time.Now()
	c.catchUp(t1, 20*time.Second)
	tl := c.w.tally(window{t0, t1}, nil)
	at := c.w.tally(window{t0, t1}, func(cl *client) bool { return affected[cl] })
	s.bound(at.disconnects == 0, "%s's clients are not disconnected: %d of its %d clients' connections closed (%s) [bound 0]", victim.name, at.disconnects, at.clients, kinds(at.closes))
	s.note("its clients during the cut: %s", at)
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, resume)
}

// 3. 30 % loss and 200 ms delay on every packet between the nodes for 30 s.
func lossyPeers(t *testing.T, sc scale, s *scenario) {
	hold := pick(sc, 30*time.Second, 15*time.Second)
	c := newCluster(t, sc, options{})
	cpu := c.cpuMark()
	rb0 := c.sumMetric("notify_rebalance_closes_total")
	conns := len(c.w.clients)
	t0 := time.Now()
	views := c.watchViews(250 * time.Millisecond)
	stop := c.tp.impair(t, names(c.nodes), 0.30, 200*time.Millisecond)
	sleep(c.w.ctx, hold)
	passed, dropped := stop()
	h := time.Now()
	whole := await.Poll(60*time.Second, c.whole)
	wholeAfter := time.Since(h)
	sleep(c.w.ctx, 2*time.Second)
	longest, deaths, desc := views.end()
	s.note("the emulator passed %d packets and dropped %d (%.1f%%) in %s; one cluster %.1fs after it stopped (%v); views: %s",
		passed, dropped, 100*float64(dropped)/float64(max(1, passed+dropped)), hold, wholeAfter.Seconds(), whole, desc)
	s.bound(longest <= 10*time.Second, "no member falsely declared dead for longer than 10 s: %d times declared dead, the longest %.1fs [bound 10 s]", deaths, longest.Seconds())
	c.waitRebalanceQuiet(3*time.Second, 60*time.Second)
	rb := c.sumMetric("notify_rebalance_closes_total") - rb0
	s.bound(rb <= 0.01*float64(conns), "no rebalance storm: notify_rebalance_closes_total rose by %.0f, %.2f%% of %d connections [bound 1 %%]", rb, 100*rb/float64(conns), conns)
	c.waitClients(t, "connected", 30*time.Second, func(cl *client) bool { _, open := cl.current(); return open })
	t1 := time.Now()
	c.catchUp(t1, 30*time.Second)
	tl := c.w.tally(window{t0, t1}, nil)
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, longest)
}

// 4. SIGKILL one node under load.
func sigkillNode(t *testing.T, sc scale, s *scenario) {
	c := newCluster(t, sc, options{})
	victim := c.node("n3")
	survivors := []string{"n1", "n2"}
	cpu := c.cpuMark()
	t0 := time.Now()
	sleep(c.w.ctx, 500*time.Millisecond) // messages in flight when it dies
	k := time.Now()
	affected := map[*client]bool{}
	for _, cl := range c.w.clients {
		if lb, node, ok := cl.pathAt(k); ok && (lb == victim.name || node == victim.name) {
			affected[cl] = true
		}
	}
	if err := victim.p.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if exited, _ := victim.p.wait(5 * time.Second); !exited {
		t.Fatal("n3 survived SIGKILL")
	}
	worst, p50, missing := awaitRecovered(affected, k)
	s.bound(missing == 0 && worst <= 10*time.Second, "its %d clients reconnect through haproxy and receive again: the last after %.2fs (p50 %.2fs; %d not at all) [bound 10 s]",
		len(affected), worst.Seconds(), p50.Seconds(), missing)
	// The survivors drop it from their rings (memberlist's suspicion
	// time), then move what the bounded load moves between them.
	dropped := await.Poll(30*time.Second, func() bool {
		for _, n := range survivors {
			st, err := c.node(n).cluster()
			m, _ := st.members()
			if err != nil || !slices.Equal(m, survivors) {
				return false
			}
		}
		return true
	})
	s.note("the survivors dropped %s from their views %.1fs after the kill (%v)", victim.name, time.Since(k).Seconds(), dropped)
	c.nodes = slices.DeleteFunc(c.nodes, func(n *nodeProc) bool { return n == victim })
	c.waitRebalanceQuiet(3*time.Second, 30*time.Second)
	c.waitClients(t, "connected", 30*time.Second, func(cl *client) bool { _, open := cl.current(); return open })
	t1 := time.Now()
	c.catchUp(t1, 20*time.Second)
	tl := c.w.tally(window{t0, t1}, nil)
	ot := c.w.tally(window{t0, t1}, func(cl *client) bool { return !affected[cl] })
	// What the ring moves among the survivors when n3 goes: users n1 or n2
	// owned that now belong to the other (the bounded load).
	r3, r2 := ringOf(t, "n1", "n2", "n3"), ringOf(t, survivors...)
	between := 0
	for _, u := range c.w.users {
		if o := r3.Locate(u.id); o != victim.name && o != r2.Locate(u.id) {
			between++
		}
	}
	s.bound(ot.disconnects == 0, "the other %d clients see 0 disconnects: %d (%s); the ring of n1, n2 gives %d of the %d users n1 or n2 owned to the other one (bounded load) [bound 0]",
		ot.clients, ot.disconnects, kinds(ot.closes), between, sc.users)
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, worst)
}

// awaitRecovered waits (up to 40 s) until each client got a message on a
// connection made after k, and returns the longest and median time that
// took, and how many never did.
func awaitRecovered(affected map[*client]bool, k time.Time) (worst, p50 time.Duration, missing int) {
	recovered := func(cl *client) (time.Duration, bool) {
		for _, ss := range cl.snapshot() {
			if ss.start.After(k) && len(ss.at) > 0 {
				return cl.w.at(ss.at[0]).Sub(k), true
			}
		}
		return 0, false
	}
	await.Poll(40*time.Second, func() bool {
		for cl := range affected {
			if _, ok := recovered(cl); !ok {
				return false
			}
		}
		return true
	})
	var per []time.Duration
	for cl := range affected {
		d, ok := recovered(cl)
		if !ok {
			missing++
			continue
		}
		per = append(per, d)
		worst = max(worst, d)
	}
	slices.Sort(per)
	if len(per) > 0 {
		p50 = per[len(per)/2]
	}
	return worst, p50, missing
}

// 5. Rolling restart of every node with SIGTERM under load.
func rollingRestart(t *testing.T, sc scale, s *scenario) {
	// haproxy checks /readyz every 300 ms and takes a node out at its first
	// failure: a second of not ready while still accepting covers that.
	env := []string{"NOTIFY_DRAIN_DELAY=1s"}
	if sc.short {
		env = append(env, "NOTIFY_DRAIN_TIMEOUT=5s")
	}
	c := newCluster(t, sc, options{nodeEnv: env})
	cpu := c.cpuMark()
	t0 := time.Now()
	for _, n := range c.nodes {
		start := time.Now()
		if err := n.p.signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		exited, err := n.p.wait(45 * time.Second)
		if !exited {
			t.Fatalf("%s still runs %s after SIGTERM", n.name, time.Since(start).Round(time.Second))
		}
		if err != nil {
			s.note("%s exited with %v after SIGTERM, want 0", n.name, err)
		}
		drained := time.Since(start)
		c.startNode(n)
		c.waitWhole(t, 60*time.Second)
		c.waitHAProxy(t, names(c.nodes)...)
		s.note("%s drained and exited in %.1fs, back and in haproxy after %.1fs", n.name, drained.Seconds(), time.Since(start).Seconds())
		sleep(c.w.ctx, 5*time.Second) // before the next, as a deployment's minReadySeconds
	}
	c.waitRebalanceQuiet(3*time.Second, 60*time.Second)
	c.waitClients(t, "connected", 30*time.Second, func(cl *client) bool { _, open := cl.current(); return open })
	t1 := time.Now()
	c.catchUp(t1, 20*time.Second)
	tl := c.w.tally(window{t0, t1}, nil)
	rt := c.w.tally(window{t0, t1}, func(cl *client) bool { return cl.kind == kindResume })
	raw := c.w.tally(window{t0, t1}, func(cl *client) bool { return cl.kind == kindRaw })

	gaps, failed, errs, notBack := reconnectsSince(c.w.clients, t0)
	var worst, p50 time.Duration
	if len(gaps) > 0 {
		worst, p50 = gaps[len(gaps)-1], gaps[len(gaps)/2]
	}
	s.bound(failed == 0, "0 failed reconnects (jittered backoff: 50-500 ms after a close, then 100 ms doubling to 2 s): %d connection attempts failed of %d reconnects {%s} [bound 0]", failed, len(gaps)+notBack, kinds(errs))
	s.note("reconnects: %d, back after p50 %.2fs, max %.2fs; %d clients not back", len(gaps), p50.Seconds(), worst.Seconds(), notBack)
	s.bound(rt.resumeLost == 0 && rt.resumeDup == 0 && rt.notRecovered == 0, "resuming clients (?envelope=1&since=, FCALL notify_publish) lose 0: %d lost, %d duplicated, %d resumes not recovered of %d clients [bound 0]",
		rt.resumeLost, rt.resumeDup, rt.notRecovered, rt.clients)
	s.note("raw clients (PUBLISH, at most once) lost %d messages while reconnecting (%d in an open session): %s", raw.lost, raw.lostInSession, raw)
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, worst)
}

// reconnectsSince looks at every close by the server since t0: how long
// until the client's next session was ready (sorted), the connection
// attempts that failed (by kind of error), and the clients not back.
func reconnectsSince(clients []*client, t0 time.Time) (gaps []time.Duration, failed int, errs map[string]int, notBack int) {
	errs = map[string]int{}
	for _, cl := range clients {
		ss := cl.snapshot()
		for i, x := range ss {
			if !x.closed || x.byUs || x.closedAt.Before(t0) {
				continue
			}
			if i+1 < len(ss) {
				gaps = append(gaps, ss[i+1].ready.Sub(x.closedAt))
			} else {
				notBack++
			}
		}
		for _, f := range cl.failsSince(t0) {
			failed++
			errs[shortErr(f.err)]++
		}
	}
	slices.Sort(gaps)
	return gaps, failed, errs, notBack
}

// shortErr keeps the kind of a dial error, not its addresses.
func shortErr(e string) string {
	switch {
	case strings.Contains(e, "503"):
		return "503"
	case strings.Contains(e, "502"):
		return "502"
	case strings.Contains(e, "connection refused"):
		return "refused"
	case strings.Contains(e, "reset"):
		return "reset"
	case strings.Contains(e, "EOF"):
		return "EOF"
	case strings.Contains(e, "timeout"):
		return "timeout"
	}
	if len(e) > 40 {
		return e[:40]
	}
	return e
}

// 6. Redis frozen (SIGSTOP) for 10 s, then killed and restarted empty.
func redisOutage(t *testing.T, sc scale, s *scenario) {
	stopFor := pick(sc, 10*time.Second, 5*time.Second)
	downFor := pick(sc, 5*time.Second, 2*time.Second)
	c := newCluster(t, sc, options{})
	cpu := c.cpuMark()
	t0 := time.Now()

	dip := func(what string, from time.Time, restore func() time.Time) (time.Time, time.Duration) {
		return readinessDip(c, s, what, from, stopFor+downFor+10*time.Second, restore)
	}

	// a) SIGSTOP for stopFor, SIGCONT.
	st := time.Now()
	if err := c.redis.p.signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont, _ := dip("SIGSTOP", st, func() time.Time {
		sleep(c.w.ctx, time.Until(st.Add(stopFor)))
		if err := c.redis.p.signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	})
	c.waitClients(t, "receiving after SIGCONT", 30*time.Second, func(cl *client) bool { return cl.receivedAfter(cont) })
	resA := c.w.resumedAfter(cont, nil)
	s.bound(resA.worst() <= 2*time.Second, "SIGSTOP %s: delivery resumes %.2fs after SIGCONT [bound 2 s]; %s", stopFor, resA.worst().Seconds(), resA)
	sleep(c.w.ctx, 3*time.Second)

	// b) SIGKILL, downFor later a new, empty redis-server.
	kt := time.Now()
	c.redis.p.kill()
	restarted, _ := dip("SIGKILL and restart", kt, func() time.Time {
		sleep(c.w.ctx, time.Until(kt.Add(downFor)))
		c.redis.start()
		return time.Now()
	})
	c.waitClients(t, "receiving after the restart", 30*time.Second, func(cl *client) bool { return cl.receivedAfter(restarted) })
	resB := c.w.resumedAfter(restarted, nil)
	s.bound(resB.worst() <= 2*time.Second, "killed, restarted empty %s later: delivery resumes %.2fs after it answers PING [bound 2 s]; %s", downFor, resB.worst().Seconds(), resB)

	sleep(c.w.ctx, 2*time.Second)
	t1 := time.Now()
	c.catchUp(t1, 20*time.Second)
	tl := c.w.tally(window{t0, t1}, nil)
	s.bound(tl.disconnects == 0, "no client disconnected: %d closes (%s) [bound 0]", tl.disconnects, kinds(tl.closes))
	s.note("publishes Redis did not answer (not owed): %d of %d", c.w.failed.Load(), c.w.sent.Load())
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, max(resA.worst(), resB.worst()))
}

// readinessDip waits (up to wait) until every node was unready at some
// point since from, calls restore, then waits until every node is ready
// again, and bounds both: readiness dips and recovers. It returns when
// restore returned, and how long readiness took after it.
func readinessDip(c *cluster, s *scenario, what string, from time.Time, wait time.Duration, restore func() time.Time) (time.Time, time.Duration) {
	unready := map[string]time.Duration{}
	await.Poll(wait, func() bool {
		for _, n := range c.nodes {
			if _, seen := unready[n.name]; !seen && !n.ready() {
				unready[n.name] = time.Since(from)
			}
		}
		return len(unready) == len(c.nodes)
	})
	r := restore()
	back := await.Poll(30*time.Second, func() bool {
		for _, n := range c.nodes {
			if !n.ready() {
				return false
			}
		}
		return true
	})
	readyAfter := time.Since(r)
	var parts []string
	for _, n := range names(c.nodes) {
		if d, ok := unready[n]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1fs", n, d.Seconds()))
		} else {
			parts = append(parts, n+" never")
		}
	}
	s.bound(len(unready) == len(c.nodes) && back, "%s: readiness dips (503 after %s) and recovers (every node 200 %.2fs after Redis is back)", what, strings.Join(parts, ", "), readyAfter.Seconds())
	return r, readyAfter
}

// 7. A tenth of the clients stop reading.
//
// They are all the connections of a tenth of the users, which also joined
// a topic. Phase A ("the run without them"): everyone reads the steady
// load. Phase C, a control: a bulk stream on their topic (32 KiB eight
// times a second, 256 KiB/s each) and they read it too: what moving those
// bytes costs the two cores. Phase B: they stop reading, the stream goes
// on: their buffers (a small client receive buffer, haproxy's, the
// sockets', the relay's, then the node's NOTIFY_SEND_QUEUE_BYTES) fill,
// and the node must cut them with 4008 while the others keep their
// latency. They keep sending heartbeats (pings), so it is the
// slow-consumer cut that must end them, not the idle timeout.
func slowReaders(t *testing.T, sc scale, s *scenario) {
	phaseA := pick(sc, 30*time.Second, 15*time.Second)
	maxB := pick(sc, 90*time.Second, 60*time.Second) // phase B lasts until every stopper is cut
	stopperUsers := sc.users / 10
	const bulkSize, bulkEvery = 32 << 10, 125 * time.Millisecond
	c := newCluster(t, sc, options{stopperUsers: stopperUsers})
	stoppers := slices.DeleteFunc(slices.Clone(c.w.clients), func(cl *client) bool { return cl.kind != kindStopper })
	sleep(c.w.ctx, 3*time.Second)
	cpu := c.cpuMark()
	t0 := time.Now()

	// A: everyone reads.
	rss := c.watchRSS()
	c.w.takeLatencies()
	c.w.latOn.Store(true)
	sleep(c.w.ctx, phaseA)
	latA := c.w.takeLatencies()
	rssA := rss.end()

	// C: the bulk stream, read by the stoppers-to-be.
	bulkStop := c.w.bulk(bulkSize, bulkEvery)
	defer bulkStop()
	bulk0 := c.w.bulkBytes.Load()
	cpuC := c.cpuMark()
	sleep(c.w.ctx, phaseA)
	latC := c.w.takeLatencies()
	s.note("control (the bulk stream read by its %d clients, %.0f MiB/s): %s", len(stoppers),
		float64(c.w.bulkBytes.Load()-bulk0)/mib/phaseA.Seconds(), c.cpuSince(cpuC))

	// B: the stoppers stop reading; their stream goes on.
	closed0 := c.sumMetric("notify_disconnects_total")
	cut0 := c.sumMetric("notify_disconnects_total", "code", "4008")
	onNode := stopReading(stoppers)
	b := time.Now()
	cpuB := c.cpuMark()
	rss = c.watchRSS()
	queues := c.watchSendQueues(5 * time.Second)
	allCut, firstCut := awaitCut(t, c, b, maxB, len(stoppers), closed0, cut0)
	cutAfter := time.Since(b)
	latB := c.w.takeLatencies()
	cpuDuringB := c.cpuSince(cpuB)
	c.w.latOn.Store(false)
	rssB := rss.end()
	cut := c.sumMetric("notify_disconnects_total", "code", "4008") - cut0
	bulkStop()

	closed := c.sumMetric("notify_disconnects_total") - closed0
	s.bound(allCut && cut >= float64(len(stoppers)), "the stoppers are cut with 4008: %.0f of %d (the first %.1fs after they stopped reading a %d KiB/s stream; %.0f closed in all, the last %.1fs after; waited up to %s)",
		cut, len(stoppers), firstCut.Seconds(), bulkSize*int(time.Second/bulkEvery)>>10, closed, cutAfter.Seconds(), maxB)
	s.note("kernel send queues at their largest (ss): %s", queues.end())
	boundReadersP99(s, len(stoppers), latA, latB, latC)
	s.note("while they were stopped: %s", cpuDuringB)
	over, parts := rssOver(names(c.nodes), rssA, rssB, onNode)
	s.bound(!over, "node RSS stays bounded (peak while stopped <= peak before + stoppers x NOTIFY_SEND_QUEUE_BYTES + 64 MiB): %s", strings.Join(parts, "; "))

	// The stoppers read again: what they find at the end of their stream.
	codes := readAgain(stoppers)
	s.note("the stoppers, reading again, found their connections ended by: %s (%d bulk bytes received in all)", kinds(codes), c.w.bulkBytes.Load())

	readers := func(cl *client) bool { return cl.kind != kindStopper }
	t1 := time.Now()
	c.catchUp(t1, 20*time.Second)
	tl := c.w.tally(window{t0, t1}, readers)
	s.bound(tl.closes["4008"] == 0, "no reader is cut: %d readers' connections closed with 4008", tl.closes["4008"])
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, cutAfter)
}

// boundReadersP99 checks the readers' p99 while the stoppers were stopped
// (latB) against the control (latC): the same clients reading the same
// stream, so that the figure is what stopping costs the others. The stream
// itself (some 75 MiB/s through haproxy and the nodes, there only to fill
// the stoppers' queues in seconds rather than hours) costs everybody on two
// cores, whether its readers read or not; the run without it (latA) is
// printed beside.
func boundReadersP99(s *scenario, stoppers int, latA, latB, latC []int32) {
	p99A, p99B, p99C := percentile(latA, 0.99), percentile(latB, 0.99), percentile(latC, 0.99)
	s.bound(p99B <= 2*p99C, "the readers' p99 while %d readers were stopped %s vs %s with them reading the same stream (p50 %s vs %s; %d and %d messages) [bound 2x]; without the stream at all: p99 %s, p50 %s",
		stoppers, p99B, p99C, percentile(latB, 0.5), percentile(latC, 0.5), len(latB), len(latC), p99A, percentile(latA, 0.5))
}

// awaitCut waits (up to maxB) until every stopper's connection was closed
// (the node's close counter grew by stoppers since closed0), logging every
// 10 s; it reports whether they all were, and when the first 4008 came.
func awaitCut(t *testing.T, c *cluster, b time.Time, maxB time.Duration, stoppers int, closed0, cut0 float64) (bool, time.Duration) {
	t.Helper()
	lastLog := time.Now()
	var firstCut time.Duration
	allCut := await.Poll(maxB, func() bool {
		time.Sleep(200 * time.Millisecond)
		n := c.sumMetric("notify_disconnects_total", "code", "4008") - cut0
		closed := c.sumMetric("notify_disconnects_total") - closed0
		if n > 0 && firstCut == 0 {
			firstCut = time.Since(b)
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			t.Logf("%.0fs after they stopped: %.0f of %d stoppers cut with 4008, %.0f closed in all", time.Since(b).Seconds(), n, stoppers, closed)
		}
		return closed >= float64(stoppers)
	})
	return allCut, firstCut
}

// rssOver reports whether a node's peak RSS while the stoppers were
// stopped (after) passed its peak before plus its stoppers' send queues
// plus 64 MiB, with a line per node.
func rssOver(nodes []string, before, after map[string]float64, onNode map[string]int) (over bool, parts []string) {
	for _, n := range nodes {
		limit := before[n] + float64(onNode[n])*float64(256<<10) + 64*mib
		parts = append(parts, fmt.Sprintf("%s %.0f MiB -> peak %.0f MiB (%d stoppers served; limit %.0f MiB)", n, before[n]/mib, after[n]/mib, onNode[n], limit/mib))
		over = over || after[n] > limit
	}
	return over, parts
}

// stopReading makes the stoppers stop reading and returns how many of
// them each node serves.
func stopReading(stoppers []*client) map[string]int {
	onNode := map[string]int{}
	for _, cl := range stoppers {
		if s, open := cl.current(); open {
			onNode[s.node]++
		}
		cl.stopReading()
	}
	return onNode
}

// readAgain makes the stoppers read again, waits until their connections
// ended, and returns how they ended.
func readAgain(stoppers []*client) map[string]int {
	for _, cl := range stoppers {
		cl.resumeReading()
	}
	await.Poll(30*time.Second, func() bool {
		for _, cl := range stoppers {
			if _, open := cl.current(); open {
				return false
			}
		}
		return true
	})
	codes := map[string]int{}
	for _, cl := range stoppers {
		if x, _ := cl.current(); x != nil {
			if x.closed {
				codes[closeKind(x.code, x.reason)]++
			} else {
				codes["still open"]++
			}
		}
	}
	return codes
}

// 8. Ten minutes of connection churn (100 connects/s) under the publish load.
func soak(t *testing.T, sc scale, s *scenario) {
	dur := pick(sc, 10*time.Minute, time.Minute)
	const churnRate = 100
	c := newCluster(t, sc, options{})
	sleep(c.w.ctx, 5*time.Second)
	// The heap profiles of both samples stay for `go tool pprof -diff_base`.
	profiles := filepath.Join(os.TempDir(), fmt.Sprintf("notify-fault-soak-%d", os.Getpid()))
	if err := os.MkdirAll(profiles, 0o755); err != nil {
		t.Fatal(err)
	}
	take := func(when string) map[string]soakSample { return takeSoakSample(t, c, profiles, when) }
	// A warm-up of churn first, then the start sample with the churn
	// stopped: what grows once to its high-water mark (maps, the loops'
	// descriptor tables, pools) is in both samples; a leak is not.
	warm := c.startChurn(churnRate)
	sleep(c.w.ctx, pick(sc, time.Minute, 20*time.Second))
	warm.stop()
	sleep(c.w.ctx, 10*time.Second)
	start := take("start")
	cpu := c.cpuMark()
	t0 := time.Now()
	ch := c.startChurn(churnRate)
	for elapsed := time.Duration(0); elapsed < dur; elapsed += time.Minute {
		sleep(c.w.ctx, min(time.Minute, dur-elapsed))
		var parts []string
		for _, n := range c.nodes {
			m, _ := n.gcThenScrape()
			g, _ := m.sum("go_goroutines")
			f, _ := m.sum("process_open_fds")
			r, _ := m.sum("process_resident_memory_bytes")
			hi, _ := m.sum("go_memstats_heap_inuse_bytes")
			ha, _ := m.sum("go_memstats_heap_alloc_bytes")
			hl, _ := m.sum("go_gc_heap_live_bytes")
			parts = append(parts, fmt.Sprintf("%s %0.f goroutines %0.f fds RSS %.0f MiB, after a collection live heap %.2f MiB, in use %.2f MiB, allocated %.2f MiB", n.name, g, f, r/mib, hl/mib, hi/mib, ha/mib))
		}
		t.Logf("soak %s: %d churn connections made, %d failed; %s", elapsed+min(time.Minute, dur-elapsed), ch.made.Load(), ch.failed.Load(), strings.Join(parts, "; "))
	}
	ch.stop()
	t1 := time.Now()
	// The churn's closes finish, timers fire, collections run.
	sleep(c.w.ctx, 10*time.Second)
	end := take("end")
	bad, parts := compareSoak(start, end, names(c.nodes))
	s.bound(!bad, "goroutines, descriptors and live heap (go_gc_heap_live_bytes: what the collection marked) at the end within 5%% of the start: %s", strings.Join(parts, "; "))
	var alloc []string
	for _, n := range names(c.nodes) {
		alloc = append(alloc, fmt.Sprintf("%s in use %.2f -> %.2f MiB, allocated %.2f -> %.2f MiB", n, start[n].heap/mib, end[n].heap/mib, start[n].alloc/mib, end[n].alloc/mib))
	}
	s.note("heap spans (go_memstats_heap_inuse_bytes, _alloc_bytes after a collection, the least of five): %s; heap profiles: %s/{n1,n2,n3}-{start,end}.pb.gz (go tool pprof -diff_base=<start> <end>)", strings.Join(alloc, "; "), profiles)
	s.note("churn: %d connections made (%.0f/s), %d failed {%s}, %d messages received by them", ch.made.Load(), float64(ch.made.Load())/t1.Sub(t0).Seconds(), ch.failed.Load(), kinds(ch.errors()), ch.msgs.Load())
	c.catchUp(t1, 20*time.Second)
	tl := c.w.tally(window{t0, t1}, nil)
	s.bound(tl.lostOpen == 0, "0 lost for connections that stayed open: %d lost by %d clients [bound 0]", tl.lostOpen, tl.openClients)
	s.note("%s", c.cpuSince(cpu))
	s.line(tl, 0)
}

// soakSample is what the soak compares between its start and its end.
type soakSample struct{ goroutines, fds, live, heap, alloc float64 }

// takeSoakSample scrapes every node five times after a collection and
// keeps the medians of the counts and of the live heap (marked by that
// collection), and the smallest span figures (the scrape comes a moment
// after the collection, while the load goes on allocating: the least is the
// closest to what survived it); each node's heap profile goes to dir.
func takeSoakSample(t *testing.T, c *cluster, dir, when string) map[string]soakSample {
	t.Helper()
	out := map[string]soakSample{}
	for _, n := range c.nodes {
		if b, err := n.heapProfile(); err == nil {
			_ = os.WriteFile(filepath.Join(dir, n.name+"-"+when+".pb.gz"), b, 0o644)
		}
		var gs, fs, ls, hs, as []float64
		for range 5 {
			m, err := n.gcThenScrape()
			if err != nil {
				t.Fatalf("%s: %v", n.name, err)
			}
			g, _ := m.sum("go_goroutines")
			f, _ := m.sum("process_open_fds")
			l, _ := m.sum("go_gc_heap_live_bytes")
			h, _ := m.sum("go_memstats_heap_inuse_bytes")
			a, _ := m.sum("go_memstats_heap_alloc_bytes")
			gs, fs, ls, hs, as = append(gs, g), append(fs, f), append(ls, l), append(hs, h), append(as, a)
			sleep(c.w.ctx, 500*time.Millisecond) // spaced samples: there is no condition to wait for
		}
		out[n.name] = soakSample{median(gs), median(fs), median(ls), slices.Min(hs), slices.Min(as)}
	}
	return out
}

// compareSoak reports whether any node's goroutines, descriptors or heap
// moved more than 5 % between start and end, with a line per figure.
func compareSoak(start, end map[string]soakSample, nodes []string) (bad bool, parts []string) {
	for _, n := range nodes {
		a, b := start[n], end[n]
		for _, m := range []struct {
			what       string
			from, to   float64
			unit       float64
			unitSuffix string
		}{
			{"goroutines", a.goroutines, b.goroutines, 1, ""},
			{"fds", a.fds, b.fds, 1, ""},
			{"live heap", a.live, b.live, mib, " MiB"},
		} {
			pct := 100 * (m.to - m.from) / m.from
			flag := ""
			if pct > 5 || pct < -5 {
				bad, flag = true, " (OVER)"
			}
			parts = append(parts, fmt.Sprintf("%s %s %.4g -> %.4g%s (%+.1f%%)%s", n, m.what, m.from/m.unit, m.to/m.unit, m.unitSuffix, pct, flag))
		}
	}
	return bad, parts
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[len(s)/2]
}

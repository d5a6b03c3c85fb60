//go:build linux && fault

package fault

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

// sessionAt is the session of c open at t (nil when none was).
func sessionAt(sessions []session, t time.Time) *session {
	for i := range sessions {
		s := &sessions[i]
		if !s.ready.After(t) && (!s.closed || s.closedAt.After(t)) {
			return s
		}
	}
	return nil
}

// pathOf is where a client's connection at t went: the node haproxy sent
// it to and the node serving it.
func (c *client) pathAt(t time.Time) (lb, node string, ok bool) {
	s := sessionAt(c.snapshot(), t)
	if s == nil {
		return "", "", false
	}
	return s.lb, s.node, true
}

// resumption measures how delivery came back after x: per node, how long
// after x the first message published at or after x reached one of the
// clients it serves; per client, how long until it got its first one.
type resumption struct {
	perNode   map[string]time.Duration
	clientP50 time.Duration
	clientMax time.Duration
	missing   int // clients that got none
}

func (w *world) resumedAfter(x time.Time, include func(*client) bool) resumption {
	at, _ := w.pubLog()
	r := resumption{perNode: map[string]time.Duration{}}
	xs := x.UnixNano()
	var per []time.Duration
	for _, c := range w.clients {
		if c.kind == kindStopper || (include != nil && !include(c)) {
			continue
		}
		pubs := at[c.u.idx]
		best := time.Duration(-1)
		for _, s := range c.snapshot() {
			for j, q := range s.seqs {
				i := int(q) - 1
				if i < 0 || i >= len(pubs) || pubs[i] < xs {
					continue
				}
				d := w.at(s.at[j]).Sub(x)
				if best < 0 || d < best {
					best = d
				}
				if cur, ok := r.perNode[s.node]; !ok || d < cur {
					r.perNode[s.node] = d
				}
				break // the first of the session is its earliest
			}
		}
		if best < 0 {
			r.missing++
			continue
		}
		per = append(per, best)
	}
	if len(per) > 0 {
		slices.Sort(per)
		r.clientP50 = per[len(per)/2]
		r.clientMax = per[len(per)-1]
	}
	return r
}

// worst is the longest per-node resumption (of the nodes named, or all).
func (r resumption) worst(nodes ...string) time.Duration {
	var d time.Duration
	for n, v := range r.perNode {
		if len(nodes) == 0 || slices.Contains(nodes, n) {
			d = max(d, v)
		}
	}
	return d
}

func (r resumption) String() string {
	var parts []string
	for _, n := range slices.Sorted(mapsKeys(r.perNode)) {
		parts = append(parts, fmt.Sprintf("%s %.2fs", n, r.perNode[n].Seconds()))
	}
	return fmt.Sprintf("first delivery per node after it: %s; per client p50 %.2fs, max %.2fs, %d got nothing",
		strings.Join(parts, ", "), r.clientP50.Seconds(), r.clientMax.Seconds(), r.missing)
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// waitRebalanceQuiet waits until notify_rebalance_closes_total has not
// moved for quiet (at most timeout).
func (c *cluster) waitRebalanceQuiet(quiet, timeout time.Duration) {
	last, since := c.sumMetric("notify_rebalance_closes_total"), time.Now()
	await.Poll(timeout, func() bool {
		time.Sleep(200 * time.Millisecond)
		v := c.sumMetric("notify_rebalance_closes_total")
		if v != last {
			last, since = v, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

// ---- watching the membership views ----

// viewWatch polls every node's /cluster and records, per observer and
// member, the spans the member was missing from the observer's list
// (declared dead or gone) and suspect.
type viewWatch struct {
	c      *cluster
	stop   context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	absent map[[2]string][]span // observer, member
	susp   map[[2]string][]span
}

type span struct{ from, to time.Time }

func (c *cluster) watchViews(every time.Duration) *viewWatch {
	ctx, cancel := context.WithCancel(context.Background())
	v := &viewWatch{c: c, stop: cancel, done: make(chan struct{}), absent: map[[2]string][]span{}, susp: map[[2]string][]span{}}
	openA, openS := map[[2]string]time.Time{}, map[[2]string]time.Time{}
	go func() {
		defer close(v.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				now := time.Now()
				v.mu.Lock()
				for k, from := range openA {
					v.absent[k] = append(v.absent[k], span{from, now})
				}
				for k, from := range openS {
					v.susp[k] = append(v.susp[k], span{from, now})
				}
				v.mu.Unlock()
				return
			case <-tk.C:
			}
			now := time.Now()
			for _, obs := range c.nodes {
				st, err := obs.cluster()
				if err != nil {
					continue
				}
				state := map[string]string{}
				for _, m := range st.Members {
					state[m.Name] = m.State
				}
				v.mu.Lock()
				for _, m := range c.nodes {
					if m == obs {
						continue
					}
					k := [2]string{obs.name, m.name}
					s, listed := state[m.name]
					track := func(open map[[2]string]time.Time, into map[[2]string][]span, on bool) {
						from, was := open[k]
						switch {
						case on && !was:
							open[k] = now
						case !on && was:
							into[k] = append(into[k], span{from, now})
							delete(open, k)
						}
					}
					track(openA, v.absent, !listed)
					track(openS, v.susp, listed && s != "alive")
				}
				v.mu.Unlock()
			}
		}
	}()
	return v
}

// end stops watching and returns the longest absence, how many there were,
// and a description of them all.
func (v *viewWatch) end() (longest time.Duration, n int, desc string) {
	v.stop()
	<-v.done
	v.mu.Lock()
	defer v.mu.Unlock()
	var parts []string
	keys := make([][2]string, 0, len(v.absent))
	for k := range v.absent {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		for _, s := range v.absent[k] {
			d := s.to.Sub(s.from)
			longest = max(longest, d)
			n++
			parts = append(parts, fmt.Sprintf("%s saw %s dead for %.1fs", k[0], k[1], d.Seconds()))
		}
	}
	ns, ls := 0, time.Duration(0)
	for _, spans := range v.susp {
		for _, s := range spans {
			ns++
			ls = max(ls, s.to.Sub(s.from))
		}
	}
	parts = append(parts, fmt.Sprintf("%d suspect spans, the longest %.1fs", ns, ls.Seconds()))
	return longest, n, strings.Join(parts, "; ")
}

// ---- sampling a node's resources ----

// rssWatch samples every node's resident memory every second.
type rssWatch struct {
	stop context.CancelFunc
	done chan struct{}
	mu   sync.Mutex
	peak map[string]float64
}

func (c *cluster) watchRSS() *rssWatch {
	ctx, cancel := context.WithCancel(context.Background())
	r := &rssWatch{stop: cancel, done: make(chan struct{}), peak: map[string]float64{}}
	go func() {
		defer close(r.done)
		for {
			for _, n := range c.nodes {
				v := n.metric("process_resident_memory_bytes")
				r.mu.Lock()
				r.peak[n.name] = max(r.peak[n.name], v)
				r.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return r
}

func (r *rssWatch) end() map[string]float64 {
	r.stop()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peak
}

const mib = 1 << 20

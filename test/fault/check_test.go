//go:build linux && fault

package fault

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// closeGrace: a message published this close to a session's end (or
// later) is not owed to it: it may have been in flight when the server
// closed, or behind the close on the wire.
const closeGrace = 2 * time.Second

// tally is what the clients saw of the messages published in a window.
//
//   - delivered: messages published in the window and received (each
//     copy);
//   - lost: messages published in the window (Redis answered) that a client
//     of the user never received, in any session: what its user missed.
//     For a raw client that includes what was published while it was
//     reconnecting (at most once: nobody owes it those), split out as
//     gapMissed; lostInSession is what an open session did not get, which
//     the contract forbids; a resuming client must miss nothing;
//   - lostOpen: lost by the clients whose one session stayed open through
//     the window;
//   - duplicated: extra copies (in one session, or across a resume);
//   - disconnects: sessions ended by the server or the network in the
//     window.
type tally struct {
	clients, openClients             int
	delivered, lost, duplicated      int
	lostOpen, lostInSession          int
	gapMissed, resumeLost, resumeDup int
	disorder, optional               int
	disconnects                      int
	closes                           map[string]int
	lateCloses                       map[string]int // closed after the window (and its grace), before the check
	notRecovered                     int
	examples                         []string
}

func (t *tally) example(format string, args ...any) {
	if len(t.examples) < 10 {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

// closeKind names a close: moved, shutdown, dropped (no close frame) or
// its code.
func closeKind(code int, reason string) string {
	switch {
	case code == 1012 && reason == "moved":
		return "moved"
	case code == 1012 && reason == "shutdown":
		return "shutdown"
	case code == 1006:
		return "dropped"
	case code == 4008 || reason == "":
		return fmt.Sprint(code)
	}
	return fmt.Sprintf("%d %q", code, reason)
}

// window is the span a check covers.
type window struct{ t0, t1 time.Time }

// tally checks the clients include accepts against the messages published
// in win. Call it after catchUp(win.t1).
func (w *world) tally(win window, include func(*client) bool) *tally {
	at, ok := w.pubLog()
	t := &tally{closes: map[string]int{}, lateCloses: map[string]int{}}
	for _, c := range w.clients {
		if include != nil && !include(c) {
			continue
		}
		t.addClient(c, win, at[c.u.idx], ok[c.u.idx])
	}
	return t
}

// addClient counts one client: its sessions in win, then every message
// published in win that it should have had (pubs, oks: its user's).
func (t *tally) addClient(c *client, win window, pubs []int64, oks []bool) {
	t.clients++
	count := make([]uint8, len(pubs))
	inWindow := t.addSessions(c, win, pubs, count)
	// One session, open before the window and still open after it.
	open := len(inWindow) == 1 && inWindow[0].ready.Before(win.t0) &&
		(!inWindow[0].closed || inWindow[0].closedAt.After(win.t1))
	if open {
		t.openClients++
	}
	t.addMissed(c, win, pubs, oks, count, inWindow, open)
}

// addSessions counts what c's sessions in win received (into count, by
// publish), their order, closes and resumes; it returns those sessions.
func (t *tally) addSessions(c *client, win window, pubs []int64, count []uint8) []session {
	t0, t1 := win.t0.UnixNano(), win.t1.UnixNano()
	var inWindow []session
	for _, s := range c.snapshot() {
		if s.closed && s.closedAt.Before(win.t0) {
			continue
		}
		inWindow = append(inWindow, s)
		prev := int32(0)
		for _, q := range s.seqs {
			if q <= prev {
				t.disorder++
			}
			prev = q
			i := int(q) - 1
			if i < 0 || i >= len(pubs) || pubs[i] < t0 || pubs[i] > t1 {
				continue
			}
			t.delivered++
			if count[i] < 255 {
				count[i]++
			}
		}
		if s.closed && !s.byUs {
			if !s.closedAt.After(win.t1.Add(closeGrace)) {
				t.disconnects++
				t.closes[closeKind(s.code, s.reason)]++
			} else {
				t.lateCloses[closeKind(s.code, s.reason)]++
			}
		}
		if s.since != "" && !s.ready.Before(win.t0) && (s.recovered == nil || !*s.recovered) {
			t.notRecovered++
			t.example("%v: resumed from %s on %s: recovered %v", c, s.since, s.node, s.recovered)
		}
	}
	return inWindow
}

// addMissed counts the messages published in win that c got no time
// (lost, by why) or more than once (duplicated).
func (t *tally) addMissed(c *client, win window, pubs []int64, oks []bool, count []uint8, inWindow []session, open bool) {
	t0, t1 := win.t0.UnixNano(), win.t1.UnixNano()
	owedInSession := func(pub int64) bool {
		for _, s := range inWindow {
			if s.ready.UnixNano() <= pub && (!s.closed || pub <= s.closedAt.Add(-closeGrace).UnixNano()) {
				return true
			}
		}
		return false
	}
	missed := 0
	for i, pub := range pubs {
		if pub < t0 || pub > t1 {
			continue
		}
		if !oks[i] {
			t.optional++
			continue
		}
		switch n := int(count[i]); {
		case n == 0:
			t.lost++
			missed++
			switch {
			case c.kind == kindResume:
				t.resumeLost++
			case owedInSession(pub):
				t.lostInSession++
			default:
				t.gapMissed++
			}
			if open {
				t.lostOpen++
			}
			if missed == 1 && (open || c.kind == kindResume || owedInSession(pub)) {
				t.example("%v: lost #%d published %s (%s)", c, i+1, time.Unix(0, pub).Format("15:04:05.000"), c.describe())
			}
		case n > 1:
			t.duplicated += n - 1
			if c.kind == kindResume {
				t.resumeDup += n - 1
			}
			t.example("%v: #%d received %d times", c, i+1, n)
		}
	}
}

func (t *tally) String() string {
	return fmt.Sprintf("clients=%d delivered=%d lost=%d (open sessions: %d of %d clients lost %d; in-session %d; raw clients while reconnecting %d; resuming %d) duplicated=%d (resuming %d) out-of-order=%d not-owed(publish failed)=%d disconnects=%d {%s} (after the window: %s) resumes-not-recovered=%d",
		t.clients, t.delivered, t.lost, t.openClients, t.clients, t.lostOpen, t.lostInSession, t.gapMissed, t.resumeLost,
		t.duplicated, t.resumeDup, t.disorder, t.optional, t.disconnects, kinds(t.closes), kinds(t.lateCloses), t.notRecovered)
}

func kinds(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// ---- results ----

// result is one scenario's line and the bounds it failed.
type result struct {
	name   string
	line   string
	failed []string
	notes  []string
}

var (
	resultsMu sync.Mutex
	results   []*result
)

// scenario is the running scenario's bookkeeping.
type scenario struct {
	t   *testing.T
	res *result
}

func newScenario(t *testing.T, name string) *scenario {
	r := &result{name: name}
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
	return &scenario{t: t, res: r}
}

// bound checks one of the bounds: a failure is reported as such,
// with the figures, and the scenario goes on.
func (s *scenario) bound(ok bool, format string, args ...any) {
	s.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ok {
		s.t.Logf("bound held: %s", msg)
		return
	}
	s.res.failed = append(s.res.failed, msg)
	s.t.Errorf("BOUND FAILED: %s", msg)
}

func (s *scenario) note(format string, args ...any) {
	s.t.Helper()
	msg := fmt.Sprintf(format, args...)
	s.res.notes = append(s.res.notes, msg)
	s.t.Log(msg)
}

// line prints the scenario's one line, exactly the issue's format.
func (s *scenario) line(t *tally, recovery time.Duration) {
	s.res.line = fmt.Sprintf("fault %s delivered=%d lost=%d duplicated=%d disconnects=%d recovery_s=%.2f",
		s.res.name, t.delivered, t.lost, t.duplicated, t.disconnects, recovery.Seconds())
	fmt.Println(s.res.line)
	s.t.Logf("detail: %s", t)
	if len(t.examples) > 0 {
		s.t.Logf("examples:\n  %s", strings.Join(t.examples, "\n  "))
	}
}

// printTable prints every scenario's line, then a Markdown table of them.
func printTable() {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	fmt.Println("\nfault: results")
	for _, r := range results {
		if r.line != "" {
			fmt.Println(r.line)
		} else {
			fmt.Printf("fault %s (no line: the scenario stopped early)\n", r.name)
		}
	}
	fmt.Println("\n| scenario | delivered | lost | duplicated | disconnects | recovery_s | bounds |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range results {
		f := map[string]string{}
		for _, kv := range strings.Fields(r.line)[min(2, len(strings.Fields(r.line))):] {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		verdict := "held"
		if len(r.failed) > 0 {
			verdict = "FAILED: " + strings.Join(r.failed, "; ")
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s |\n", r.name, f["delivered"], f["lost"], f["duplicated"], f["disconnects"], f["recovery_s"], verdict)
	}
}

// percentile of µs samples, as a duration.
func percentile(us []int32, p float64) time.Duration {
	if len(us) == 0 {
		return 0
	}
	s := slices.Clone(us)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := min(len(s)-1, int(p*float64(len(s))))
	return time.Duration(s[i]) * time.Microsecond
}

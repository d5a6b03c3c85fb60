package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The accounting of TestHistoryRecovery: every client, whatever its kind,
// becomes one record of what it saw over all its sessions, checked against
// the cursors the API answered.

// delivery is one message a client received: the sequence number its
// payload carried, and its cursor (clients of raw frames see none).
type delivery struct {
	seq    int
	cursor string
}

// resumeRecord is one client's whole history.
type resumeRecord struct {
	name     string // for failure messages
	user     string
	first    string // the cursor of its first state frame: what it is owed starts after it
	got      []delivery
	sessions int
	// resumed counts the sessions that asked for a since; gaps describes
	// those that were not told recovered:true.
	resumed int
	gaps    []string
	bad     []string // protocol violations the client saw
}

// tally sums the records of one kind of client.
type tally struct {
	clients, delivered, lost, duplicated, disorder, wrongCursor, unexpected int
	optional                                                                int // messages whose Publish failed: owed at most once
	reconnects, resumed, gaps, bad                                          int
	examples                                                                []string
}

func (t *tally) example(format string, args ...any) {
	if len(t.examples) < 12 {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

// add checks one record against pub, each user's cursors by sequence
// number: every message published after its first state frame's cursor
// must be in got exactly once, in order, with the cursor the API answered
// (withCursors).
func (t *tally) add(r resumeRecord, pub map[string][]string, withCursors bool) {
	t.clients++
	t.delivered += len(r.got)
	t.reconnects += max(0, r.sessions-1)
	t.resumed += r.resumed
	t.gaps += len(r.gaps)
	t.bad += len(r.bad)
	for _, g := range r.gaps {
		t.example("%s: %s", r.name, g)
	}
	for _, b := range r.bad {
		t.example("%s: %s", r.name, b)
	}
	cs := pub[r.user]
	from := owedFrom(cs, r.first)
	count := map[int]int{}
	highest := 0
	for _, d := range r.got {
		count[d.seq]++
		switch {
		case d.seq < from || d.seq >= len(cs):
			t.unexpected++
			t.example("%s: got #%d, owed #%d..#%d (first state cursor %q)", r.name, d.seq, from, len(cs)-1, r.first)
			continue
		case count[d.seq] > 1:
			t.duplicated++
			t.example("%s: #%d again (cursor %s) after #%d", r.name, d.seq, d.cursor, highest)
		case d.seq < highest:
			t.disorder++
			t.example("%s: #%d after #%d", r.name, d.seq, highest)
		}
		if withCursors && cs[d.seq] != "" && d.cursor != cs[d.seq] {
			t.wrongCursor++
			t.example("%s: #%d with cursor %q, the API answered %q", r.name, d.seq, d.cursor, cs[d.seq])
		}
		highest = max(highest, d.seq)
	}
	lost := 0
	for q := from; q < len(cs); q++ {
		switch {
		case cs[q] == "":
			t.optional++
		case count[q] == 0:
			if lost == 0 {
				t.example("%s: lost #%d (cursor %s) [%d sessions]", r.name, q, cs[q], r.sessions)
			}
			lost++
		}
	}
	t.lost += lost
}

// owedFrom is the first sequence number whose cursor comes after first
// (every one when first is empty or of another epoch).
func owedFrom(cs []string, first string) int {
	fe, fs, ok := cursorPos(first)
	if !ok {
		return 1
	}
	for q := len(cs) - 1; q >= 1; q-- {
		if e, s, ok := cursorPos(cs[q]); ok && e == fe && s <= fs {
			return q + 1
		}
	}
	return 1
}

func (t *tally) String() string {
	return fmt.Sprintf("clients=%d delivered=%d lost=%d duplicated=%d out-of-order=%d unexpected=%d wrong-cursor=%d reconnects=%d resumes=%d not-recovered=%d violations=%d",
		t.clients, t.delivered, t.lost, t.duplicated, t.disorder, t.unexpected, t.wrongCursor, t.reconnects, t.resumed, t.gaps, t.bad)
}

// exact reports whether the records delivered exactly once, in order,
// and recovered every resume.
func (t *tally) exact() bool {
	return t.lost == 0 && t.duplicated == 0 && t.disorder == 0 && t.unexpected == 0 && t.wrongCursor == 0 && t.gaps == 0 && t.bad == 0
}

// record is what a Go client saw.
func (c *client) record(sessions []session) resumeRecord {
	r := resumeRecord{name: c.String(), user: c.user, sessions: len(sessions)}
	c.mu.Lock()
	r.bad = append(r.bad, c.bad...)
	c.mu.Unlock()
	for i, s := range sessions {
		if i == 0 {
			r.first = s.cursor
		}
		for j, q := range s.seqs {
			d := delivery{seq: q}
			if j < len(s.cursors) {
				d.cursor = s.cursors[j]
			}
			r.got = append(r.got, d)
		}
		if s.since == "" {
			continue
		}
		r.resumed++
		if s.recovered == nil || !*s.recovered {
			r.gaps = append(r.gaps, fmt.Sprintf("session %d (via %s on %s) resumed from %s: recovered %s", i, s.lb, s.node, s.since, boolPtr(s.recovered)))
		}
	}
	return r
}

func boolPtr(b *bool) string {
	if b == nil {
		return "absent"
	}
	return fmt.Sprint(*b)
}

// closeKinds counts closes by kind, "kind: n, ..." in a stable order.
func closeKinds(kinds map[string]int) string {
	var parts []string
	for _, k := range []string{"moved", "shutdown", "dropped"} {
		if kinds[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, kinds[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		if k != "moved" && k != "shutdown" && k != "dropped" {
			parts = append(parts, fmt.Sprintf("%s %d", k, kinds[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

// jsClients is one Node.js process running test/browser/resume-clients.mjs:
// clients of the ws package, of phoenix.js, and EventSources in headless
// Chromium, each reconnecting and resuming by itself. What they print is
// kept per client, for the same checks as the Go clients.
type jsClients struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	done    chan struct{} // the output has ended

	mu      sync.Mutex
	clients []*jsClient
	started bool
	failure string // what the script reported when it failed
}

// jsClient is one JavaScript client and what it saw.
type jsClient struct {
	idx        int
	kind, user string
	states     []jsState
	got        []delivery
	closes     []string // close kinds, as closeEvent.kind names them
	bad        []string
	how        map[string]int // EventSource: how it reconnected
}

// jsState is one state frame (or, for phoenix.js, join reply): one session.
type jsState struct {
	Since     string `json:"since"`
	Cursor    string `json:"cursor"`
	Recovered *bool  `json:"recovered"`
}

// jsSpec is one client to start: its kind, its user, the origin it uses.
type jsSpec struct {
	Kind  string `json:"kind"`
	User  string `json:"user"`
	Token string `json:"token"`
	Base  string `json:"base"`
}

// startJSClients starts the clients of specs; they are told to quit, and
// the process is waited for, when the test ends.
func startJSClients(t *testing.T, br browser, dir string, specs []jsSpec) *jsClients {
	t.Helper()
	cfgPath := filepath.Join(dir, "resume-clients.json")
	b, _ := json.Marshal(map[string]any{"chromium": br.chromium, "clients": specs})
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	j := &jsClients{logPath: filepath.Join(dir, "resume-clients.log"), done: make(chan struct{})}
	for i, s := range specs {
		j.clients = append(j.clients, &jsClient{idx: i, kind: s.Kind, user: s.User})
	}
	logf, err := os.Create(j.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	j.cmd = exec.Command(br.nodeBin, "resume-clients.mjs", cfgPath)
	j.cmd.Dir = br.dir
	j.cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	j.cmd.Stderr = logf
	j.cmd.SysProcAttr = sysProcAttr()
	j.stdin, _ = j.cmd.StdinPipe()
	out, _ := j.cmd.StdoutPipe()
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go j.read(out)
	t.Cleanup(func() { j.quit(t) })
	return j
}

// quit tells the script to end and waits for it (then kills it).
func (j *jsClients) quit(t *testing.T) {
	_, _ = io.WriteString(j.stdin, `{"cmd":"quit"}`+"\n")
	select {
	case <-j.done:
	case <-time.After(15 * time.Second):
		t.Errorf("resume-clients.mjs did not quit within 15s")
		_ = j.cmd.Process.Kill()
	}
	_ = j.cmd.Wait()
	if t.Failed() {
		b, _ := os.ReadFile(j.logPath)
		t.Logf("---- resume-clients.mjs stderr:\n%s", lastLines(string(b), 40))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// jsEvent is one line of the script's output (jsState's cursor is also
// a message's).
type jsEvent struct {
	C       *int   `json:"c"`
	Ev      string `json:"ev"`
	Data    any    `json:"data"`
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	How     string `json:"how"`
	jsState
}

func (j *jsClients) read(out io.Reader) {
	defer close(j.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev jsEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue
		}
		j.mu.Lock()
		j.handle(ev, sc.Text())
		j.mu.Unlock()
	}
}

func (j *jsClients) handle(ev jsEvent, line string) {
	if ev.C == nil || *ev.C < 0 || *ev.C >= len(j.clients) {
		switch ev.Ev {
		case "started":
			j.started = true
		case "failed", "pageerror":
			j.failure = line
		}
		return
	}
	c := j.clients[*ev.C]
	switch ev.Ev {
	case "state":
		c.states = append(c.states, ev.jsState)
	case "msg":
		data, _ := ev.Data.(string)
		rest, ok := strings.CutPrefix(data, c.user+":")
		seq, err := strconv.Atoi(rest)
		if !ok || err != nil || len(c.states) == 0 {
			c.bad = append(c.bad, fmt.Sprintf("unexpected message %s", line))
			return
		}
		c.got = append(c.got, delivery{seq: seq, cursor: ev.jsState.Cursor})
	case "close":
		c.closes = append(c.closes, closeEvent{code: ev.Code, reason: ev.Reason}.kind())
	case "reconnect":
		if c.how == nil {
			c.how = map[string]int{}
		}
		c.how[ev.How]++
	default: // bad, join_error, join_timeout
		c.bad = append(c.bad, line)
	}
}

// waitFor polls until pending reports "" for every client, or fails the
// test naming some of those still pending.
func (j *jsClients) waitFor(t *testing.T, what string, timeout time.Duration, pending func(*jsClient) string) {
	t.Helper()
	var waiting []string
	ok := await.Poll(timeout, func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.failure != "" {
			return true
		}
		waiting = waiting[:0]
		for _, c := range j.clients {
			if why := pending(c); why != "" {
				waiting = append(waiting, fmt.Sprintf("%s client %d (user %s): %s [%d sessions, %d messages, closes %v]",
					c.kind, c.idx, c.user, why, len(c.states), len(c.got), c.closes))
			}
		}
		return len(waiting) == 0
	})
	j.mu.Lock()
	failure := j.failure
	j.mu.Unlock()
	switch {
	case failure != "":
		t.Fatalf("resume-clients.mjs: %s", failure)
	case !ok:
		t.Fatalf("after %s, %d JavaScript clients are not there yet (%s):\n  %s", timeout, len(waiting), what, joinFirst(waiting, 10))
	}
}

// waitStarted waits until every client has its first session.
func (j *jsClients) waitStarted(t *testing.T, timeout time.Duration) {
	t.Helper()
	j.waitFor(t, "started and connected", timeout, func(c *jsClient) string {
		if len(c.states) == 0 {
			return "no state yet"
		}
		return ""
	})
}

// waitReceived waits until every client has received #q (or later).
func (j *jsClients) waitReceived(t *testing.T, q int, timeout time.Duration) {
	t.Helper()
	j.waitFor(t, fmt.Sprintf("received #%d", q), timeout, func(c *jsClient) string {
		if n := len(c.got); n == 0 || c.got[n-1].seq < q {
			return "behind"
		}
		return ""
	})
}

// closesSince counts, by kind of client, the closes after marks (the
// number of closes of each client then).
func (j *jsClients) closesSince(marks []int) map[string]map[string]int {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string]map[string]int{}
	for i, c := range j.clients {
		from := 0
		if i < len(marks) {
			from = marks[i]
		}
		for _, k := range c.closes[from:] {
			if out[c.kind] == nil {
				out[c.kind] = map[string]int{}
			}
			out[c.kind][k]++
		}
	}
	return out
}

func (j *jsClients) marks() []int {
	j.mu.Lock()
	defer j.mu.Unlock()
	var m []int
	for _, c := range j.clients {
		m = append(m, len(c.closes))
	}
	return m
}

// reconnects sums, per kind of client, how its clients reconnected (the
// EventSources say).
func (j *jsClients) reconnects() map[string]map[string]int {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string]map[string]int{}
	for _, c := range j.clients {
		for how, n := range c.how {
			if out[c.kind] == nil {
				out[c.kind] = map[string]int{}
			}
			out[c.kind][how] += n
		}
	}
	return out
}

// records is every client's record, by kind.
func (j *jsClients) records() map[string][]resumeRecord {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string][]resumeRecord{}
	for _, c := range j.clients {
		r := resumeRecord{name: fmt.Sprintf("%s client %d (user %s)", c.kind, c.idx, c.user), user: c.user,
			sessions: len(c.states), got: append([]delivery(nil), c.got...), bad: append([]string(nil), c.bad...)}
		for i, s := range c.states {
			if i == 0 {
				r.first = s.Cursor
			}
			if s.Since == "" {
				continue
			}
			r.resumed++
			if s.Recovered == nil || !*s.Recovered {
				r.gaps = append(r.gaps, fmt.Sprintf("session %d resumed from %s: recovered %s", i, s.Since, boolPtr(s.Recovered)))
			}
		}
		out[c.kind] = append(out[c.kind], r)
	}
	return out
}

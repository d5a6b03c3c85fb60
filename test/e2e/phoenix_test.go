package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/notify-dev/notify/auth"
)

// TestPhoenixLongPollBehindHAProxy: phoenix.js in headless Chromium, forced
// onto the LongPoll transport, through the round-robin haproxy in front of
// three nodes. Its polls land on every node; the session lives on the
// user's owner and the others proxy to it.
func TestPhoenixLongPollBehindHAProxy(t *testing.T) {
	t.Parallel()
	requireTools(t, "redis-server", "haproxy")
	browser := findBrowser(t)

	e := newEnv(t)
	nodes := []*node{e.planNode("lp1", "127.0.0.11"), e.planNode("lp2", "127.0.0.12"), e.planNode("lp3", "127.0.0.13")}
	e.start(nodes[0], nil, true)
	e.start(nodes[1], []string{nodes[0].gossip}, true)
	e.start(nodes[2], []string{nodes[0].gossip}, true)
	waitRing(t, nodes, names(nodes))
	h := e.startHAProxy(nodes)
	h.waitServers(t, names(nodes)...)

	const user = "browser-lp"
	owner := newRing(t, names(nodes)...).Locate(user)
	tok, err := auth.Sign(auth.Config{Secret: jwtSecret}, user, nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Cancelled after the browser client is told to quit and has exited
	// (cleanups run last registered first).
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	b := browser.start(t, ctx, "longpoll", "http://"+h.addr, tok, user)

	if ev := b.next(t, "joined"); ev["longpoll"] != true {
		t.Fatalf("joined %v, not over LongPoll", ev)
	}
	// The session is on the owner, and only there.
	for _, n := range nodes {
		v, err := n.metric("notify_connections", "transport", "longpoll")
		if err != nil {
			t.Fatal(err)
		}
		want := 0.0
		if n.name == owner {
			want = 1
		}
		if v != want {
			t.Fatalf("%s holds %v long-poll sessions, want %v (owner %s)", n.name, v, want, owner)
		}
	}
	for i := 0; i < 3; i++ {
		if err := e.redis.Client(t).Publish(ctx, "notify:"+user, `{"n":`+string(rune('0'+i))+`}`).Err(); err != nil {
			t.Fatal(err)
		}
		ev := b.next(t, "message")
		if p, _ := ev["payload"].(map[string]any); p["n"] != float64(i) {
			t.Fatalf("message %d: %v", i, ev)
		}
	}
}

// browser is what test/browser/browser-client.mjs needs: Node.js, Chromium
// and the npm packages.
type browser struct {
	nodeBin, chromium, dir string
}

// findBrowser skips the test when any of them is missing.
func findBrowser(t *testing.T) browser {
	t.Helper()
	br, err := locateBrowser(true)
	if err != nil {
		t.Skip(err)
	}
	return br
}

// locateBrowser finds Node.js, the npm packages and, when withChromium,
// Chromium; the error says what is missing.
func locateBrowser(withChromium bool) (browser, error) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return browser{}, errors.New("node (Node.js) not found; make deps installs it")
	}
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if withChromium {
			return browser{}, errors.New(chromium + " not found: apt-get install chromium (make deps)")
		}
		chromium = "" // the caller does without
	}
	browserDir, _ := filepath.Abs(filepath.Join("..", "browser"))
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "phoenix")); err != nil {
		return browser{}, errors.New("test/browser/node_modules missing: cd test/browser && npm ci (make deps)")
	}
	return browser{nodeBin: nodeBin, chromium: chromium, dir: browserDir}, nil
}

// browserClient is a running browser-client.mjs and the JSON events it
// prints.
type browserClient struct {
	events chan map[string]any
}

// start runs browser-client.mjs with args until ctx ends (then SIGTERM);
// when the test ends it is told to quit and waited for.
func (br browser) start(t *testing.T, ctx context.Context, args ...string) *browserClient {
	t.Helper()
	tmp := t.TempDir()
	cmd := exec.CommandContext(ctx, br.nodeBin, append([]string{"browser-client.mjs"}, args...)...)
	cmd.Dir = br.dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "CHROMIUM="+br.chromium)
	cmd.Stderr = os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &browserClient{events: make(chan map[string]any, 100)}
	go func() {
		defer close(b.events)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				b.events <- m
			}
		}
	}()
	t.Cleanup(func() {
		_, _ = io.WriteString(in, `{"cmd":"quit"}`+"\n")
		_ = cmd.Wait()
	})
	return b
}

// next waits for the event want; a failure the client reports fails the test.
func (b *browserClient) next(t *testing.T, want string) map[string]any {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-b.events:
			if !ok {
				t.Fatalf("the browser client exited while waiting for %q", want)
			}
			if ev["event"] == want {
				return ev
			}
			if ev["event"] == "failed" || ev["event"] == "pageerror" {
				t.Fatalf("browser: %v", ev)
			}
		case <-timeout:
			t.Fatalf("no %q within 30s", want)
		}
	}
}

package node

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/api/notificationspb"
	"github.com/notify-dev/notify/internal/redistest"
)

// browserDir returns test/browser with its npm packages, or skips.
func browserDir(t *testing.T, packages ...string) (nodeBin, dir string) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(root, "test", "browser")
	nodeBin, err = exec.LookPath("node")
	if err != nil {
		t.Skip("node (Node.js) not found; make deps installs it")
	}
	for _, p := range packages {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", p)); err != nil {
			t.Skipf("test/browser/node_modules/%s missing: cd test/browser && npm ci (make deps)", p)
		}
	}
	return nodeBin, dir
}

// jsEvents reads the script's JSON lines.
type jsEvents struct {
	t     *testing.T
	lines chan map[string]any
	in    io.Writer
}

func (e *jsEvents) next(want string) map[string]any {
	e.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-e.lines:
			if !ok {
				e.t.Fatalf("the client exited while waiting for %q", want)
			}
			if ev["event"] == want {
				return ev
			}
		case <-timeout:
			e.t.Fatalf("no %q event within 20s", want)
		}
	}
}

func (e *jsEvents) send(cmd map[string]any) {
	b, _ := json.Marshal(cmd)
	_, _ = e.in.Write(append(b, '\n'))
}

// TestPhoenixJSClient runs phoenix.js (npm, 1.8.x) under Node with the ws
// package against a node on Redis: join with state, a Redis publish, a
// BroadcastTextMessage with its event name, a refused join, heartbeats, and
// a reconnect and rejoin after the node restarts.
func TestPhoenixJSClient(t *testing.T) {
	nodeBin, dir := browserDir(t, "phoenix", "ws")
	rs := redistest.Start(t)
	tn := startAPINode(t, rs, func(c *Config) { c.DrainTimeout = 100 * time.Millisecond })
	tn.waitReady(200)
	addr := tn.Addr()
	tn.redis.HSet(t.Context(), "notify:js1:state", "level", "7")

	cmd := exec.Command(nodeBin, "phoenix-node.mjs", "ws://"+addr+"/pubsub", token(t, "js1", nil, time.Hour), "js1")
	cmd.Dir = dir
	ev := runJSClient(t, cmd, 5*time.Second)

	joined := ev.next("joined")
	if state, _ := joined["state"].(map[string]any); state["level"] != "7" {
		t.Fatalf("join reply %v", joined)
	}
	ev.next("heartbeat")
	tn.publish("notify:js1", `{"hello":"phoenix"}`)
	if m := ev.next("message"); m["payload"].(map[string]any)["hello"] != "phoenix" {
		t.Fatalf("message %v", m)
	}
	cc := tn.grpcConn()
	if _, err := notificationspb.NewNotificationsServiceClient(cc).BroadcastTextMessage(grpcKey(t, testAPIKey), &notificationspb.BroadcastTextMessageRequest{
		Topics: []string{"user:js1"}, Event: "score", Message: "42 points",
	}); err != nil {
		t.Fatal(err)
	}
	if m := ev.next("score"); m["payload"] != "42 points" {
		t.Fatalf("score %v", m)
	}
	ev.send(map[string]any{"cmd": "join_other", "user": "someone-else"})
	if m := ev.next("refused"); m["reason"] != "unauthorized" {
		t.Fatalf("%v", m)
	}

	// The node restarts on the same address: the client reconnects and rejoins.
	if err := tn.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev.next("close")
	again := startAPINode(t, rs, func(c *Config) { c.Port = addr })
	again.waitReady(200)
	ev.next("joined")
	again.publish("notify:js1", `"after restart"`)
	if m := ev.next("message"); m["payload"] != "after restart" {
		t.Fatalf("after restart %v", m)
	}
}

// browserClient runs test/browser/browser-client.mjs in headless Chromium.
func browserClient(t *testing.T, mode, base, tok, user string) *jsEvents {
	t.Helper()
	nodeBin, dir := browserDir(t, "playwright-core", "phoenix")
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip(chromium + " not found: apt-get install chromium (make deps)")
	}
	tmp := t.TempDir()
	cmd := exec.Command(nodeBin, "browser-client.mjs", mode, base, tok, user)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "CHROMIUM="+chromium)
	// Cleanups run last first: this one, after the client was told to quit.
	t.Cleanup(func() {
		if left := killLeftovers(t, tmp); len(left) > 0 {
			t.Errorf("browser processes left running (killed): %v", left)
		}
	})
	return runJSClient(t, cmd, 15*time.Second)
}

// runJSClient starts a client script that prints a JSON line per event and
// reads commands from stdin; at the end of the test it is told to quit,
// then killed after grace.
func runJSClient(t *testing.T, cmd *exec.Cmd, grace time.Duration) *jsEvents {
	t.Helper()
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ev := &jsEvents{t: t, lines: make(chan map[string]any, 1000), in: in}
	go func() {
		defer close(ev.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				ev.lines <- m
			}
		}
	}()
	t.Cleanup(func() {
		ev.send(map[string]any{"cmd": "quit"})
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(grace):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return ev
}

// TestSSEInChromium: a real EventSource receives connect, state and message
// events.
func TestSSEInChromium(t *testing.T) {
	tn := startNode(t, nil, nil)
	ev := browserClient(t, "sse", "http://"+tn.Addr(), token(t, "es1", nil, time.Hour), "es1")
	if m := ev.next("connect"); m["data"] != `{"kind":"connect","userID":"es1"}` {
		t.Fatalf("%v", m)
	}
	if m, _ := ev.next("state")["data"].(string); !strings.HasPrefix(m, `{"kind":"state","state":{},"cursor":"0:`) {
		t.Fatalf("state %q", m)
	}
	eventually(t, "the stream is registered", func() bool { return tn.metric("notify_connections", "transport", "sse") == 1 })
	tn.publish("notify:es1", "two\nlines")
	if m := ev.next("message"); m["data"] != "two\nlines" {
		t.Fatalf("%v", m)
	}
}

// TestLongPollInChromium: phoenix.js in a real browser, forced onto the
// LongPoll transport (its fallback when WebSockets are blocked).
func TestLongPollInChromium(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) { c.LongPollHold = time.Second })
	ev := browserClient(t, "longpoll", "http://"+tn.Addr(), token(t, "lp-b", nil, time.Hour), "lp-b")
	if m := ev.next("joined"); m["longpoll"] != true {
		t.Fatalf("%v", m)
	}
	tn.publish("notify:lp-b", `{"over":"longpoll"}`)
	if m := ev.next("message"); m["payload"].(map[string]any)["over"] != "longpoll" {
		t.Fatalf("%v", m)
	}
}

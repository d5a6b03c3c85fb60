package node

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDemoPageHeaders(t *testing.T) {
	tn := startNode(t, nil, nil)
	resp, err := http.Get(tn.url("/?token=x.y.z"))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	checkDemoPageHeaders(t, resp, body)
	checkDemoPageAssets(t, tn, body)

	// Only GET / exactly is the page.
	for _, p := range []string{"/nonexistent", "/index.html", "/static/", "/static/index.html", "/static/nope.js", "/static/../go.mod", "/notify"} {
		if code, _ := tn.get(p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
	resp, err = http.Post(tn.url("/"), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", resp.StatusCode)
	}
}

// checkDemoPageHeaders: the page's type, caching, referrer and a strict
// Content-Security-Policy, and the page loads its script.
func checkDemoPageHeaders(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	want := map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-cache",
		"Referrer-Policy":        "no-referrer",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("GET /: %s %q, want %q", k, got, v)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self' ws: wss:", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d+";") && !strings.HasSuffix(csp, d) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, d)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("Content-Security-Policy %q allows unsafe-*", csp)
	}
	if !strings.Contains(body, `<script src="/static/demo.js"`) {
		t.Errorf("GET /: no script tag in %q", body)
	}
}

// checkDemoPageAssets: every asset the page names is served, with its type,
// and revalidates by ETag.
func checkDemoPageAssets(t *testing.T, tn *testNode, body string) {
	t.Helper()
	refs := regexp.MustCompile(`(?:src|href)="(/static/[^"]+)"`).FindAllStringSubmatch(body, -1)
	if len(refs) < 3 {
		t.Fatalf("the page names %d assets, want script, style and icon", len(refs))
	}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, m := range refs {
		resp, err := http.Get(tn.url(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != types[filepath.Ext(m[1])] ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d %q %q", m[1], resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"))
		}
		req, _ := http.NewRequest(http.MethodGet, tn.url(m[1]), nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		resp2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp2)
		if resp.Header.Get("ETag") == "" || resp2.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %q: %d, want 304", m[1], resp.Header.Get("ETag"), resp2.StatusCode)
		}
	}
}

// TestDemoPageInChromium drives the page in headless Chromium through
// test/browser/demo.mjs: connect with the token from the URL, see the
// connect and state frames, publish to itself through the Twirp API.
func TestDemoPageInChromium(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "test", "browser")
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node (Node.js) not found; make deps installs it")
	}
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip(chromium + " not found: apt-get install chromium (make deps)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Skip("test/browser/node_modules missing: cd test/browser && npm ci (make deps)")
	}

	tn := startAPINode(t, nil, func(c *Config) { c.GRPCPort = "off" })
	tok := token(t, "demo", nil, time.Hour)

	// The browser's profile and anything else it writes go under tmp,
	// removed by the test even if the script is killed.
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "demo.mjs", "http://"+tn.Addr(), tok, testAPIKey)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "CHROMIUM="+chromium)
	// On timeout: SIGTERM lets Playwright close the browser; SIGKILL 10 s later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	if left := killLeftovers(t, tmp); len(left) > 0 {
		t.Errorf("browser processes left running (killed): %v", left)
	}
	if ctx.Err() != nil {
		t.Fatalf("demo.mjs did not finish within 60 s:\n%s", out.String())
	}
	if err != nil {
		t.Fatalf("demo.mjs: %v\n%s", err, out.String())
	}
	t.Logf("demo.mjs passed in %v:\n%s", took.Round(time.Millisecond), out.String())
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

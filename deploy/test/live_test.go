package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// nodeEnv is the environment without any notify setting of the caller's.
func nodeEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if isSetting(k) {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// isSetting: the variable names the node reads look like these.
func isSetting(name string) bool {
	return strings.HasPrefix(name, "NOTIFY_") || strings.HasPrefix(name, "LOG_") || strings.HasPrefix(name, "REDIS_") ||
		slices.Contains([]string{"PORT", "INTERNAL_PORT", "PPROF_PORT", "GRPC_PORT", "PUBSUB_REDIS_ADDR"}, name)
}

// scrapedMetrics parses the exposition's TYPE lines into the names a query
// can use: counters and gauges as they are, histograms and summaries with
// their _bucket/_sum/_count series.
func scrapedMetrics(body string) map[string]bool {
	names := map[string]bool{}
	typeLine := regexp.MustCompile(`^# TYPE (\S+) (\S+)`)
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := typeLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		names[m[1]] = true
		switch m[2] {
		case "histogram":
			names[m[1]+"_bucket"], names[m[1]+"_sum"], names[m[1]+"_count"] = true, true, true
		case "summary":
			names[m[1]+"_sum"], names[m[1]+"_count"] = true, true
		}
	}
	return names
}

// TestLiveMetrics runs the node built by the Dockerfile's command, with an
// INTERNAL_PORT as the chart and deploy/k8s set it, and checks that every
// notify_* name the alert rules and the dashboard use is one it exports on
// the internal port (where the ServiceMonitor scrapes; 404 on PORT), that the
// probe paths answer on PORT, and that SIGTERM ends it with 0.
func TestLiveMetrics(t *testing.T) {
	bin := notifyBinary(t)
	const apiKey = "deploytest-api-key"
	n := startLiveNode(t, bin, apiKey)

	n.waitHealthy(t)
	// /readyz exists (200 or 503 with a reason; never 404).
	if code, body, err := n.get("/readyz"); err != nil || (code != http.StatusOK && code != http.StatusServiceUnavailable) {
		t.Errorf("/readyz: %d %q %v: want 200 or 503", code, body, err)
	}
	n.callAuth(t, bin, apiKey)
	n.checkExportsUsedMetrics(t)

	// SIGTERM: drain (nothing to drain here), exit 0.
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.exited:
		if n.waitErr != nil {
			t.Errorf("after SIGTERM the node exited with %v, want status 0", n.waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the node did not exit within 30s of SIGTERM (NOTIFY_DRAIN_TIMEOUT=1s)")
	}
}

// liveNode is a notify serve process of TestLiveMetrics.
type liveNode struct {
	cmd  *exec.Cmd
	logs syncBuffer
	base string // http://127.0.0.1:<port>
	// internal is http://127.0.0.1:<INTERNAL_PORT>: metrics and /cluster.
	internal string
	client   *http.Client
	// exited is closed once the process has ended; waitErr is then its status.
	exited  chan struct{}
	waitErr error
}

// startLiveNode starts bin serve on a free port with apiKey; when the test
// ends the process is killed if it still runs, and its output logged if the
// test failed.
func startLiveNode(t *testing.T, bin, apiKey string) *liveNode {
	t.Helper()
	port, internal := freePort(t), freePort(t)
	n := &liveNode{
		cmd:      exec.Command(bin, "serve"),
		base:     fmt.Sprintf("http://127.0.0.1:%d", port),
		internal: fmt.Sprintf("http://127.0.0.1:%d", internal),
		client:   &http.Client{Timeout: 5 * time.Second},
		exited:   make(chan struct{}),
	}
	n.cmd.Env = nodeEnv(
		fmt.Sprintf("PORT=127.0.0.1:%d", port), fmt.Sprintf("INTERNAL_PORT=127.0.0.1:%d", internal), "PPROF_PORT=off", "NOTIFY_JWT_SECRET=x", "GRPC_PORT=off",
		"NOTIFY_GOSSIP_ADDR=127.0.0.1:0", "NOTIFY_API_KEY="+apiKey, "NOTIFY_DRAIN_TIMEOUT=1s", "LOG_FORMAT=text")
	n.cmd.Stdout, n.cmd.Stderr = &n.logs, &n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.waitErr = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		select {
		case <-n.exited:
		default:
			n.cmd.Process.Kill()
			<-n.exited
		}
		if t.Failed() {
			t.Logf("node output:\n%s", n.logs.String())
		}
	})
	return n
}

// get returns the status and body of GET path on PORT.
func (n *liveNode) get(path string) (int, string, error) { return n.getAt(n.base, path) }

// getAt returns the status and body of GET base+path.
func (n *liveNode) getAt(base, path string) (int, string, error) {
	resp, err := n.client.Get(base + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHealthy: up, /healthz answers 200 (what the liveness probe asks).
func (n *liveNode) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, err := n.get("/healthz")
		if err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-n.exited:
			t.Fatalf("node exited before serving: %v", n.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz: no 200 within 30s (last: %d %v)", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// callAuth makes one API call, so the API's labelled series exist. Auth is
// the call every version of the API has (go-bridget/notify's).
func (n *liveNode) callAuth(t *testing.T, bin, apiKey string) {
	t.Helper()
	tokenCmd := exec.Command(bin, "token", "--user", "deploytest")
	tokenCmd.Env = nodeEnv("NOTIFY_JWT_SECRET=x")
	token, err := tokenCmd.Output()
	if err != nil {
		t.Fatalf("notify token: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, n.base+"/twirp/notify.NotifyService/Auth",
		strings.NewReader(fmt.Sprintf(`{"authorization":%q}`, strings.TrimSpace(string(token)))))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if resp, err := n.client.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Logf("API Auth call: %s", resp.Status)
	}
}

// checkExportsUsedMetrics: /metrics on the internal port exports every name
// the rules and the dashboard use; PORT has no /metrics.
func (n *liveNode) checkExportsUsedMetrics(t *testing.T) {
	t.Helper()
	if code, _, err := n.get("/metrics"); err != nil || code != http.StatusNotFound {
		t.Errorf("/metrics on PORT: %d %v, want 404 (INTERNAL_PORT is set)", code, err)
	}
	code, body, err := n.getAt(n.internal, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics on INTERNAL_PORT: %d %v", code, err)
	}
	exported := scrapedMetrics(body)
	var missing []string
	for name, where := range usedMetrics(t) {
		if !exported[name] {
			missing = append(missing, fmt.Sprintf("%s (used in %s)", name, strings.Join(where, ", ")))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("the node does not export %d metric(s) the rules or the dashboard use:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
}

// TestSettingsExist: every setting the chart, deploy/k8s and docker-compose
// pass to the node is one the binary reads (`notify --help` lists them all):
// a misspelt variable is otherwise silently ignored.
func TestSettingsExist(t *testing.T) {
	bin := notifyBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--help")
	cmd.Env = nodeEnv()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("notify --help: %v", err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`--[a-z0-9-]+, ([A-Z0-9_]+) \(default`).FindAllStringSubmatch(string(out), -1) {
		known[m[1]] = true
	}
	if len(known) < 10 {
		t.Fatalf("notify --help lists %d settings; cannot parse:\n%s", len(known), out)
	}

	used := map[string][]string{}
	note := func(where string, names ...string) {
		for _, n := range names {
			if isSetting(n) && !slices.Contains(used[n], where) {
				used[n] = append(used[n], where)
			}
		}
	}
	for _, sts := range ofKind[appsv1.StatefulSet](buildKustomization(t)) {
		for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
			note("deploy/k8s", e.Name)
		}
	}
	for _, tc := range helmCases {
		rel, err := renderChart(tc.release, "apps", kubeVersion, []string{filepath.Join("testdata", tc.file)})
		if err != nil {
			t.Fatal(err)
		}
		for _, sts := range ofKind[appsv1.StatefulSet](decodeManifests(t, tc.file, []byte(rel.Manifest))) {
			for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
				note("helm/"+tc.file, e.Name)
			}
		}
	}
	for name, s := range readCompose(t).Services {
		for k := range s.Environment {
			note("docker-compose.yml:"+name, k)
		}
	}
	var unknown []string
	for n, where := range used {
		if !known[n] {
			slices.Sort(where)
			unknown = append(unknown, fmt.Sprintf("%s (set in %s)", n, strings.Join(where, ", ")))
		}
	}
	slices.Sort(unknown)
	if len(unknown) > 0 {
		t.Errorf("settings the node does not read (not in notify --help):\n  %s", strings.Join(unknown, "\n  "))
	}
}

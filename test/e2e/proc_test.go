package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

const (
	jwtSecret    = "e2e-secret-0123456789abcdef"
	apiKey       = "e2e-api-key"
	drainTimeout = 2 * time.Second
	startTimeout = 20 * time.Second
)

// httpc talks to nodes and haproxy's stats page directly.
var httpc = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true},
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // cmd.Wait's result, valid once done is closed
}

func startProc(t *testing.T, dir, name, bin string, args, env []string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s (%s): %v", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s has already exited: %v", p.name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

// wait waits up to d for the process to exit; err is its exit error.
func (p *proc) wait(d time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if ok, _ := p.wait(grace); !ok {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logged counts the JSON log lines of the process whose message is msg.
func (p *proc) logged(msg string) int {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

// tail is the end of the process's output, long runs of one log message (a
// warning per relayed connection, say) collapsed after their first lines.
func (p *proc) tail(lines int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	var all []string
	prev, run, same := "", 0, 0
	flush := func() {
		if run > 0 {
			all = append(all, fmt.Sprintf("    ... and %d more like it", run))
			run = 0
		}
	}
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		_ = json.Unmarshal([]byte(l), &rec)
		if rec.Msg != "" && rec.Msg == prev {
			if same++; same > 3 {
				run++
				continue
			}
		} else {
			flush()
			same = 1
		}
		all = append(all, l)
		prev = rec.Msg
	}
	flush()
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("... (%d lines before)", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

// ---- the environment: redis, nodes, haproxy ----

// env is one test's processes. Everything it starts is stopped by t.Cleanup,
// and every log is printed when the test fails.
type env struct {
	t     *testing.T
	dir   string
	redis *redistest.Server
	key   string // NOTIFY_GOSSIP_KEY of the cluster
	// nodeEnv is added to every node's settings (after the defaults).
	nodeEnv []string

	mu    sync.Mutex
	procs []*proc
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), key: newGossipKey(t)}
	e.redis = redistest.Start(t)
	t.Cleanup(e.stopAll)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, p := range e.procs {
			state := "running"
			if p.exited() {
				state = fmt.Sprintf("exited: %v", p.err)
			}
			t.Logf("---- %s (%s) output:\n%s", p.name, state, p.tail(80))
		}
	})
	return e
}

func newGossipKey(t *testing.T) string {
	k := make([]byte, 16)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func (e *env) track(p *proc) {
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
}

// stopAll stops every process still running, in parallel.
func (e *env) stopAll() {
	e.mu.Lock()
	procs := slices.Clone(e.procs)
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(drainTimeout + 8*time.Second)
		}()
	}
	wg.Wait()
}

// node is a planned or running notify process.
type node struct {
	name   string
	addr   string // HTTP listener, ip:port
	gossip string // memberlist, ip:port
	key    string
	p      *proc // nil until started
	starts int   // how often it was started: a restart logs to a file of its own
}

// planNode picks the addresses of a node on its own loopback address, so
// haproxy can list it before it runs.
func (e *env) planNode(name, ip string) *node {
	e.t.Helper()
	return &node{
		name:   name,
		addr:   net.JoinHostPort(ip, strconv.Itoa(freePort(e.t, ip, false))),
		gossip: net.JoinHostPort(ip, strconv.Itoa(freePort(e.t, ip, true))),
		key:    e.key,
	}
}

// freePort finds a port free on ip (for TCP, and UDP too when udp is set:
// memberlist binds both).
func freePort(t *testing.T, ip string, udp bool) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v (is the loopback network 127.0.0.0/8 routed to lo?)", ip, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		if udp {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
			} else {
				pc.Close()
			}
		}
		l.Close()
		if ok {
			return port
		}
	}
	t.Fatalf("no free port on %s", ip)
	return 0
}

// start runs the node, joining the given gossip addresses, and waits until
// its /readyz answers 200 (when wantReady) or at least until it serves HTTP.
func (e *env) start(n *node, join []string, wantReady bool) {
	e.t.Helper()
	env := []string{
		"PORT=" + n.addr,
		"GRPC_PORT=off",
		"PPROF_PORT=off",
		"PUBSUB_REDIS_ADDR=" + e.redis.Addr,
		"REDIS_URL=",
		"NOTIFY_JWT_SECRET=" + jwtSecret,
		"NOTIFY_API_KEY=" + apiKey,
		"NOTIFY_NODE_NAME=" + n.name,
		"NOTIFY_GOSSIP_ADDR=" + n.gossip,
		"NOTIFY_JOIN=" + strings.Join(join, ","),
		"NOTIFY_GOSSIP_KEY=" + n.key,
		"NOTIFY_DRAIN_TIMEOUT=" + drainTimeout.String(),
		"NOTIFY_REBALANCE_RATE=500",
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
	}
	env = append(env, e.nodeEnv...)
	pname := n.name
	if n.starts++; n.starts > 1 {
		pname = fmt.Sprintf("%s.%d", n.name, n.starts)
	}
	n.p = startProc(e.t, e.dir, pname, notifyBin, nil, append(cleanEnviron(), env...))
	e.track(n.p)
	var code int
	var body string
	var err error
	up := func() bool { return err == nil && (code == http.StatusOK || !wantReady) }
	await.Poll(startTimeout, func() bool {
		code, body, err = n.get("/readyz")
		return up() || n.p.exited()
	})
	switch {
	case up():
		return
	case n.p.exited():
		e.t.Fatalf("%s exited while starting: %v\n%s", n.name, n.p.err, n.p.tail(40))
	}
	e.t.Fatalf("%s: /readyz is not 200 after %s: %d %s %v", n.name, startTimeout, code, body, err)
}

// cleanEnviron is this process's environment without the settings a node
// reads, so the caller's shell cannot change what the test runs.
func cleanEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "NOTIFY_"), strings.HasPrefix(k, "LOG_"),
			k == "PORT", k == "INTERNAL_PORT", k == "GRPC_PORT", k == "PPROF_PORT", k == "PUBSUB_REDIS_ADDR", k == "REDIS_URL":
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (n *node) url(path string) string { return "http://" + n.addr + path }

func (n *node) get(path string) (int, string, error) {
	resp, err := httpc.Get(n.url(path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// clusterStatus is GET /cluster.
type clusterStatus struct {
	Node struct {
		Name        string `json:"name"`
		Connections int64  `json:"connections"`
		Relayed     int64  `json:"relayed_connections"`
		Joined      bool   `json:"joined"`
		Draining    bool   `json:"draining"`
	} `json:"node"`
	Ring struct {
		Hash       string   `json:"hash"`
		Partitions int      `json:"partitions"`
		Members    []string `json:"members"`
	} `json:"ring"`
	Members []struct {
		Name       string `json:"name"`
		GossipAddr string `json:"gossip_addr"`
		RelayAddr  string `json:"relay_addr"`
		RingHash   string `json:"ring_hash"`
		State      string `json:"state"`
		Partitions int    `json:"partitions"`
		OnRing     bool   `json:"on_ring"`
	} `json:"members"`
	User *struct {
		ID        string `json:"id"`
		Owner     string `json:"owner"`
		Partition int    `json:"partition"`
	} `json:"user"`
}

func (st clusterStatus) memberNames() []string {
	var names []string
	for _, m := range st.Members {
		names = append(names, m.Name)
	}
	return names
}

func (n *node) cluster(user string) (clusterStatus, error) {
	path := "/cluster"
	if user != "" {
		path += "?user=" + user
	}
	var st clusterStatus
	code, body, err := n.get(path)
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return st, fmt.Errorf("GET %s: %v: %s", path, err, body)
	}
	return st, nil
}

// metric sums the samples of name whose labels include every k="v" pair of
// labels (given as k, v, k, v, ...). It reports an error when no sample has
// that name at all.
func (n *node) metric(name string, labels ...string) (float64, error) {
	m, err := n.scrape()
	if err != nil {
		return 0, err
	}
	return m.sum(name, labels...)
}

// metrics is one answer of a node's /metrics.
type metrics struct {
	node string
	body string
}

func (n *node) scrape() (metrics, error) {
	code, body, err := n.get("/metrics")
	if err != nil {
		return metrics{}, err
	}
	if code != http.StatusOK {
		return metrics{}, fmt.Errorf("/metrics: %d", code)
	}
	return metrics{node: n.name, body: body}, nil
}

// sum is what node.metric says, from this one scrape.
func (m metrics) sum(name string, labels ...string) (float64, error) {
	sum, found := 0.0, false
lines:
	for _, l := range strings.Split(m.body, "\n") {
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(l, labels[i]+`="`+labels[i+1]+`"`) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %v", name, l, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, fmt.Errorf("%s: no sample of %s", m.node, name)
	}
	return sum, nil
}

// ---- haproxy ----

type haproxy struct {
	p     *proc
	addr  string   // frontend
	extra []string // more addresses of the same frontend (startHAProxyBinds)
	stats string   // stats page
}

var haproxyConfig = template.Must(template.New("haproxy").Parse(`# generated by notify's test/e2e
global
    maxconn {{.MaxConn}}

defaults
    mode http
    maxconn {{.MaxConn}}
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout check 1s
    # A connection refused by a node that just died is tried on another.
    retries 3
    option redispatch 1

frontend clients
    bind {{.Addr}}
{{- range .Extra}}
    bind {{.}}
{{- end}}
    default_backend notify

frontend stats
    bind {{.Stats}}
    stats enable
    stats uri /stats

backend notify
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # Which node the client's TCP connection went to (the node that served it
    # says X-Notify-Node itself).
    http-response set-header X-Lb-Server %[srv_name]
    default-server inter 300ms fall 1 rise 1
{{- range .Servers}}
    server {{.Name}} {{.Addr}} check
{{- end}}
`))

// startHAProxy starts haproxy in front of nodes (running or not yet), with
// the round-robin config above.
func (e *env) startHAProxy(nodes []*node) *haproxy {
	e.t.Helper()
	return e.startHAProxyBinds(nodes, 0)
}

// startHAProxyBinds is startHAProxy with extra more listening addresses of
// the clients' frontend: a browser opens at most 6 connections to one
// host:port, and an EventSource holds one for good.
func (e *env) startHAProxyBinds(nodes []*node, extra int) *haproxy {
	e.t.Helper()
	type server struct{ Name, Addr string }
	var servers []server
	for _, n := range nodes {
		servers = append(servers, server{n.name, n.addr})
	}
	// Each proxied connection takes two descriptors in haproxy, which
	// refuses to start when maxconn does not fit its open-files limit
	// ("Cannot raise FD limit"): with the usual hard limit of 20000,
	// maxconn 20000 would need 40000.
	maxConn := 20000
	hard, ok := openFilesHardLimit()
	if ok && hard < 1<<20 {
		maxConn = min(maxConn, int(hard/2)-100)
	}
	if maxConn < 4000 {
		e.t.Fatalf("the open-files hard limit (%d) is too low for haproxy to proxy 3,000 clients (2 descriptors each); raise ulimit -Hn", hard)
	}
	h := &haproxy{
		addr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(e.t, "127.0.0.1", false))),
		stats: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(e.t, "127.0.0.1", false))),
	}
	for range extra {
		h.extra = append(h.extra, net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(e.t, "127.0.0.1", false))))
	}
	var cfg bytes.Buffer
	if err := haproxyConfig.Execute(&cfg, map[string]any{
		"MaxConn": maxConn, "Addr": h.addr, "Extra": h.extra, "Stats": h.stats, "Servers": servers,
	}); err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.dir, "haproxy.cfg")
	if err := os.WriteFile(path, cfg.Bytes(), 0o644); err != nil {
		e.t.Fatal(err)
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		e.t.Skip("e2e: haproxy is not on PATH")
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		e.t.Fatalf("haproxy -c -f %s: %v\n%s\nconfig:\n%s", path, err, out, cfg.String())
	}
	h.p = startProc(e.t, e.dir, "haproxy", bin, []string{"-f", path, "-db"}, os.Environ())
	e.track(h.p)
	var statsErr error
	await.Poll(startTimeout, func() bool {
		_, statsErr = h.servers()
		return statsErr == nil || h.p.exited()
	})
	switch {
	case statsErr == nil:
		return h
	case h.p.exited():
		e.t.Fatalf("haproxy exited: %v\n%s", h.p.err, h.p.tail(40))
	}
	e.t.Fatalf("haproxy's stats page does not answer after %s: %v", startTimeout, statsErr)
	return nil
}

// servers is haproxy's view: server name -> status ("UP", "DOWN", ...).
func (h *haproxy) servers() (map[string]string, error) {
	resp, err := httpc.Get("http://" + h.stats + "/stats;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("stats: %s", resp.Status)
	}
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("stats: empty")
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[strings.TrimPrefix(strings.TrimSpace(name), "# ")] = i
	}
	px, sv, st := col["pxname"], col["svname"], col["status"]
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) > max(px, sv, st) && row[px] == "notify" && row[sv] != "BACKEND" && row[sv] != "FRONTEND" {
			out[row[sv]] = row[st]
		}
	}
	return out, nil
}

// waitServers waits until haproxy sees exactly the servers in up as UP.
func (h *haproxy) waitServers(t *testing.T, up ...string) {
	t.Helper()
	var st map[string]string
	var err error
	if !await.Poll(startTimeout, func() bool {
		if st, err = h.servers(); err != nil {
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

//go:build linux && fault

package fault

import (
	"bytes"
	"context"
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
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
)

const (
	jwtSecret    = "fault-secret-0123456789abcdef"
	apiKey       = "fault-api-key"
	startTimeout = 20 * time.Second
	httpPort     = "3000"
	gossipPort   = "7946"
	pprofPort    = "6060"
	redisPort    = "6379"
)

// httpc asks the nodes and haproxy's stats page; no keep-alive, so that a
// node's goroutine and descriptor counts do not include our idle
// connections.
var httpc = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true},
}

// proc is a child process (in a namespace, or in ours) logging to a file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // cmd.Wait's result, valid once done is closed
}

// startProc runs bin in namespace ns ("" = the root namespace). `ip netns
// exec` execs bin in place, so the pid is bin's and Pdeathsig holds.
func startProc(t *testing.T, dir, name, ns, bin string, args, env []string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	argv := append([]string{bin}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	// The kernel kills a child when this process dies (a panic, a timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	liveMu.Lock()
	if tornDown {
		liveMu.Unlock()
		t.Fatal("fault: tearing down")
	}
	err = cmd.Start()
	if err == nil {
		liveProcs[cmd.Process] = name
	}
	liveMu.Unlock()
	if err != nil {
		t.Fatalf("start %s (%s): %v", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		untrackProc(cmd.Process)
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

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
		return fmt.Errorf("%s has exited already: %v", p.name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

func (p *proc) wait(d time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

// kill ends the process with SIGKILL and waits for it (a stopped process
// is continued first, or it would not die until then).
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	<-p.done
}

// cpu is the CPU time the process has used so far (in all, once it has
// exited).
func (p *proc) cpu() time.Duration {
	if p.exited() {
		if ps := p.cmd.ProcessState; ps != nil {
			return ps.UserTime() + ps.SystemTime()
		}
		return 0
	}
	return procCPU(p.pid())
}

// cpuOf adds the CPU time of every process a node or Redis ran.
func cpuOf(ps []*proc) time.Duration {
	var d time.Duration
	for _, p := range ps {
		d += p.cpu()
	}
	return d
}

// procCPU reads utime+stime of a pid from /proc (clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from after ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

// tail is the last lines of the process's log.
func (p *proc) tail(lines int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("... (%d lines before)", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

// cleanEnviron is this process's environment without the settings a node
// reads, so the caller's shell cannot change what the suite runs.
func cleanEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "NOTIFY_"), strings.HasPrefix(k, "LOG_"), strings.HasPrefix(k, "REDIS_"),
			k == "PORT", k == "GRPC_PORT", k == "PPROF_PORT", k == "PUBSUB_REDIS_ADDR", k == "INTERNAL_PORT":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// ---- redis-server ----

type redisProc struct {
	t      *testing.T
	h      *host
	dir    string
	addr   string
	p      *proc
	all    []*proc
	starts int
}

func startRedis(t *testing.T, tp *topology, dir string) *redisProc {
	t.Helper()
	r := &redisProc{t: t, h: tp.host("r"), dir: dir}
	r.addr = net.JoinHostPort(r.h.ip, redisPort)
	r.start()
	return r
}

// start runs redis-server (empty: no persistence) and waits for PING.
func (r *redisProc) start() {
	r.t.Helper()
	r.starts++
	name := "redis"
	if r.starts > 1 {
		name = fmt.Sprintf("redis.%d", r.starts)
	}
	bin, _ := exec.LookPath("redis-server")
	r.p = startProc(r.t, r.dir, name, r.h.ns, bin, []string{
		"--bind", r.h.ip, "--port", redisPort, "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--dir", r.dir, "--maxclients", "10000", "--loglevel", "warning",
	}, os.Environ())
	r.all = append(r.all, r.p)
	c := redis.NewClient(&redis.Options{Addr: r.addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	var err error
	if !await.Poll(startTimeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err = c.Ping(ctx).Err()
		return err == nil || r.p.exited()
	}) || err != nil {
		r.t.Fatalf("redis-server on %s does not answer PING: %v\n%s", r.addr, err, r.p.tail(20))
	}
}

// ---- notify nodes ----

type nodeProc struct {
	name   string
	h      *host
	addr   string // HTTP, ip:port
	gossip string
	pprof  string
	p      *proc
	all    []*proc // every process it ran (restarts)
	starts int
}

// startNode runs a notify node in its namespace and waits until /readyz
// says 200.
func (c *cluster) startNode(n *nodeProc) {
	t := c.t
	t.Helper()
	var join []string
	for _, m := range c.nodes {
		join = append(join, m.gossip)
	}
	env := append(cleanEnviron(),
		"PORT="+n.addr,
		"GRPC_PORT=off",
		"PPROF_PORT="+n.pprof,
		"PUBSUB_REDIS_ADDR="+c.redis.addr,
		"NOTIFY_JWT_SECRET="+jwtSecret,
		"NOTIFY_API_KEY="+apiKey,
		"NOTIFY_NODE_NAME="+n.name,
		"NOTIFY_GOSSIP_ADDR="+n.gossip,
		"NOTIFY_JOIN="+strings.Join(join, ","),
		"NOTIFY_GOSSIP_KEY="+c.gossipKey,
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
	)
	env = append(env, c.opts.nodeEnv...)
	n.starts++
	pname := n.name
	if n.starts > 1 {
		pname = fmt.Sprintf("%s.%d", n.name, n.starts)
	}
	n.p = startProc(t, c.dir, pname, n.h.ns, notifyBin, nil, env)
	n.all = append(n.all, n.p)
	var code int
	var err error
	await.Poll(startTimeout, func() bool {
		code, _, err = n.get("/readyz")
		return (err == nil && code == http.StatusOK) || n.p.exited()
	})
	if n.p.exited() {
		t.Fatalf("%s exited while starting: %v\n%s", n.name, n.p.err, n.p.tail(40))
	}
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: /readyz is %d (%v) after %s\n%s", n.name, code, err, startTimeout, n.p.tail(40))
	}
}

func (n *nodeProc) get(path string) (int, string, error) {
	resp, err := httpc.Get("http://" + n.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (n *nodeProc) ready() bool {
	code, _, err := n.get("/readyz")
	return err == nil && code == http.StatusOK
}

// clusterStatus is GET /cluster (the fields the suite reads).
type clusterStatus struct {
	Node struct {
		Name        string `json:"name"`
		Connections int64  `json:"connections"`
		Relayed     int64  `json:"relayed_connections"`
	} `json:"node"`
	Ring struct {
		Members []string `json:"members"`
	} `json:"ring"`
	Members []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"members"`
}

func (n *nodeProc) cluster() (clusterStatus, error) {
	var st clusterStatus
	code, body, err := n.get("/cluster")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("/cluster: %d %s", code, body)
	}
	return st, json.Unmarshal([]byte(body), &st)
}

// members is the sorted names of the members n lists, and whether all of
// them are alive (not suspect).
func (st clusterStatus) members() (names []string, allAlive bool) {
	allAlive = true
	for _, m := range st.Members {
		names = append(names, m.Name)
		allAlive = allAlive && m.State == "alive"
	}
	slices.Sort(names)
	return names, allAlive
}

// metrics is one scrape of /metrics.
type metrics string

func (n *nodeProc) scrape() (metrics, error) {
	code, body, err := n.get("/metrics")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("%s /metrics: %d", n.name, code)
	}
	return metrics(body), nil
}

// sum adds the samples of name whose labels include every k="v" of labels
// (k, v, k, v, ...); found says whether any sample had the name.
func (m metrics) sum(name string, labels ...string) (sum float64, found bool) {
lines:
	for _, l := range strings.Split(string(m), "\n") {
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(l, labels[i]+`="`+labels[i+1]+`"`) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

// metric is one value of a node's /metrics (0 when it cannot be read).
func (n *nodeProc) metric(name string, labels ...string) float64 {
	m, err := n.scrape()
	if err != nil {
		return 0
	}
	v, _ := m.sum(name, labels...)
	return v
}

// gcThenScrape runs a garbage collection in the node (pprof's heap profile
// with gc=1) before scraping, so heap figures compare across moments.
func (n *nodeProc) gcThenScrape() (metrics, error) {
	_, _ = n.heapProfile()
	return n.scrape()
}

// heapProfile is the node's heap profile, taken after a collection.
func (n *nodeProc) heapProfile() ([]byte, error) {
	resp, err := httpc.Get("http://" + n.pprof + "/debug/pprof/heap?gc=1")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func newGossipKey(t *testing.T) string {
	k := make([]byte, 16)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// ---- haproxy ----

type haproxy struct {
	p     *proc
	addr  string
	stats string
}

var haproxyConfig = template.Must(template.New("haproxy").Parse(`# generated by notify's test/fault
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
    default_backend notify

frontend stats
    bind {{.Stats}}
    stats enable
    stats uri /stats

backend notify
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header X-Lb-Server %[srv_name]
    default-server inter 300ms fall 1 rise 1
{{- range .Servers}}
    server {{.Name}} {{.Addr}} check
{{- end}}
`))

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startHAProxy runs haproxy in the root namespace, round robin over the
// nodes, health-checking /readyz every 300 ms.
func (c *cluster) startHAProxy() *haproxy {
	t := c.t
	t.Helper()
	type server struct{ Name, Addr string }
	var servers []server
	for _, n := range c.nodes {
		servers = append(servers, server{n.name, n.addr})
	}
	// Two descriptors per proxied connection; haproxy refuses maxconn
	// values its open-files limit cannot hold.
	maxConn := 20000
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Max < 1<<20 {
		maxConn = min(maxConn, int(rl.Max/2)-100)
	}
	h := &haproxy{
		addr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		stats: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
	}
	var cfg bytes.Buffer
	if err := haproxyConfig.Execute(&cfg, map[string]any{"MaxConn": maxConn, "Addr": h.addr, "Stats": h.stats, "Servers": servers}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, "haproxy.cfg")
	if err := os.WriteFile(path, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, _ := exec.LookPath("haproxy")
	h.p = startProc(t, c.dir, "haproxy", "", bin, []string{"-f", path, "-db"}, os.Environ())
	var err error
	await.Poll(startTimeout, func() bool {
		_, err = h.servers()
		return err == nil || h.p.exited()
	})
	if err != nil {
		t.Fatalf("haproxy: %v\n%s", err, h.p.tail(20))
	}
	return h
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

// up reports whether haproxy has server name UP.
func (h *haproxy) up(name string) bool {
	st, err := h.servers()
	return err == nil && strings.HasPrefix(st[name], "UP")
}

package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/internal/await"
)

// binary is the notify command built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "notify-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "notify")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	cmd := exec.Command(binary, "--help")
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, env := range []string{
		"PORT", "INTERNAL_PORT", "PPROF_PORT", "PUBSUB_REDIS_ADDR", "REDIS_URL", "NOTIFY_JWT_SECRET", "NOTIFY_JWT_PUBLIC_KEYS",
		"NOTIFY_JWT_AUDIENCE", "NOTIFY_JWT_ISSUER", "NOTIFY_USER_CLAIM", "NOTIFY_SESSION_COOKIE",
		"NOTIFY_ALLOWED_ORIGINS", "NOTIFY_OPEN_TOPICS", "NOTIFY_PING_INTERVAL", "NOTIFY_MAX_MESSAGE_SIZE",
		"NOTIFY_SEND_QUEUE_BYTES", "NOTIFY_MAX_CONNECTIONS", "NOTIFY_NODE_NAME", "NOTIFY_DRAIN_TIMEOUT", "NOTIFY_DRAIN_DELAY", "LOG_LEVEL", "LOG_FORMAT",
		"NOTIFY_API_AUTH", "NOTIFY_EXPIRE_CONNECTIONS", "NOTIFY_REFRESH_NOTICE", "NOTIFY_JWKS_URL", "NOTIFY_JWKS_REFRESH",
		"NOTIFY_PHOENIX_SECRET_KEY_BASE", "NOTIFY_PHOENIX_TOKEN_SALT", "NOTIFY_PHOENIX_TOKEN_MAX_AGE", "NOTIFY_BROKER",
		"REDIS_SENTINEL_ADDRS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_CLUSTER_ADDRS",
		"REDIS_USERNAME", "REDIS_PASSWORD", "NOTIFY_SUBSCRIBE_MODE",
	} {
		if !strings.Contains(out.String(), " "+env+" ") {
			t.Errorf("--help does not list %s", env)
		}
	}
	if !strings.Contains(out.String(), "(default :3000)") || !strings.Contains(out.String(), "(default 25s)") {
		t.Error("--help does not show defaults")
	}
}

func TestBadSettingsNameTheSetting(t *testing.T) {
	tests := []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"PORT=http"}, nil, "PORT"},
		{[]string{"INTERNAL_PORT=metrics"}, nil, "INTERNAL_PORT"},
		{[]string{"NOTIFY_PING_INTERVAL=soon"}, nil, "NOTIFY_PING_INTERVAL"},
		{[]string{"NOTIFY_MAX_MESSAGE_SIZE=-1"}, nil, "NOTIFY_MAX_MESSAGE_SIZE"},
		{[]string{"NOTIFY_MAX_CONNECTIONS=-1"}, nil, "NOTIFY_MAX_CONNECTIONS"},
		{[]string{"NOTIFY_DRAIN_DELAY=-1s"}, nil, "NOTIFY_DRAIN_DELAY"},
		{[]string{"NOTIFY_OPEN_TOPICS=maybe"}, nil, "NOTIFY_OPEN_TOPICS"},
		{[]string{"REDIS_URL=ftp://x"}, nil, "REDIS_URL"},
		{[]string{"REDIS_SENTINEL_ADDRS=s1:26379"}, nil, "REDIS_SENTINEL_MASTER"},
		{[]string{"REDIS_CLUSTER_ADDRS=c1:x"}, nil, "REDIS_CLUSTER_ADDRS"},
		{[]string{"LOG_LEVEL=loud"}, nil, "LOG_LEVEL"},
		{nil, []string{"--notify-allowed-origins", "example.com"}, "NOTIFY_ALLOWED_ORIGINS"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			var out bytes.Buffer
			cmd := exec.Command(binary, tt.args...)
			cmd.Env = append(os.Environ(), tt.env...)
			cmd.Stderr = &out
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2; output %s", err, out.String())
			}
			if !strings.Contains(out.String(), tt.want) || strings.Contains(out.String(), "goroutine ") {
				t.Fatalf("output %q does not name %s cleanly", out.String(), tt.want)
			}
		})
	}
}

func newTestFlagSet(port *string) *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.StringVar(port, "port", ":3000", "")
	return fs
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	var got string
	env := map[string]string{"PORT": ":1111"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := parseSettings(newTestFlagSet(&got), []string{"--port", ":2222"}, lookup); err != nil {
		t.Fatal(err)
	}
	if got != ":2222" {
		t.Fatalf("port %q, want the flag's", got)
	}
	if err := parseSettings(newTestFlagSet(&got), nil, lookup); err != nil {
		t.Fatal(err)
	}
	if got != ":1111" {
		t.Fatalf("port %q, want the environment's", got)
	}
}

func TestTokenCommand(t *testing.T) {
	cmd := exec.Command(binary, "token", "--user", "demo", "--topics", "news,sport", "--ttl", "1h")
	cmd.Env = append(os.Environ(), "NOTIFY_JWT_SECRET=cmd-test-secret")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: "cmd-test-secret"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != "demo" || !c.Allows("sport") || time.Until(c.ExpiresAt) > time.Hour {
		t.Fatalf("claims %+v", c)
	}
	// Without a secret it says which setting is missing.
	cmd = exec.Command(binary, "token", "--user", "demo")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "NOTIFY_JWT_SECRET") {
		t.Fatalf("token without a secret: %v %s", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "notify ") {
		t.Fatalf("%v %q", err, out)
	}
}

// TestServeAndSIGTERM runs a node process with no Redis under each name of
// the serve command (the older Notify's CLI had notify, serve and start),
// checks it serves, then stops it with SIGTERM: exit 0, after the drain.
func TestServeAndSIGTERM(t *testing.T) {
	for _, args := range [][]string{nil, {"serve"}, {"start"}} {
		t.Run(strings.Join(append([]string{"notify"}, args...), " "), func(t *testing.T) {
			log := runUntilSIGTERM(t, args)
			for _, want := range []string{`"msg":"notify node stopped"`, `"setting":"PUBSUB_REDIS_ADDR"`} {
				if !strings.Contains(log, want) {
					t.Fatalf("log has no %s:\n%s", want, log)
				}
			}
		})
	}
}

// TestLegacySettingsReported: the older services' settings are named at
// start, as mapped or as ignored.
func TestLegacySettingsReported(t *testing.T) {
	log := runUntilSIGTERM(t, []string{"start"}, "ENVIRONMENT=prod", "ELASTIC_APM_SERVER_URL=http://apm", "PHX_HOST=example.com",
		"SECRET_KEY_BASE="+strings.Repeat("k", 64))
	for _, want := range []string{
		`"msg":"legacy settings ignored: they have no meaning in notify","settings":"ELASTIC_APM_SERVER_URL,ENVIRONMENT,PHX_HOST"`,
		`"msg":"legacy setting mapped","from":"SECRET_KEY_BASE","to":"NOTIFY_PHOENIX_SECRET_KEY_BASE"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log has no %s:\n%s", want, log)
		}
	}
	if strings.Contains(log, strings.Repeat("k", 64)) {
		t.Error("the log shows SECRET_KEY_BASE's value")
	}
}

// runUntilSIGTERM runs the command with args and env until it serves, stops
// it with SIGTERM, and returns its log once it exited 0.
func runUntilSIGTERM(t *testing.T, args []string, env ...string) string {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "PORT=127.0.0.1"+port, "PPROF_PORT=off", "GRPC_PORT=off", "NOTIFY_GOSSIP_ADDR=127.0.0.1:0", "NOTIFY_JWT_SECRET=s", "NOTIFY_DRAIN_TIMEOUT=100ms", "LOG_FORMAT=json")
	cmd.Env = append(cmd.Env, env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	base := "http://127.0.0.1" + port
	var all []string
	if !await.Poll(10*time.Second, func() bool {
		for len(lines) > 0 {
			all = append(all, <-lines)
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("not ready (/readyz 200) within 10s; log:\n%s", strings.Join(all, "\n"))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Read the log to its end (the process closing stderr) before Wait,
	// which closes the pipe.
	timeout := time.After(15 * time.Second)
	for open := true; open; {
		select {
		case l, ok := <-lines:
			if ok {
				all = append(all, l)
			}
			open = ok
		case <-timeout:
			t.Fatal("no exit within 15s of SIGTERM")
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	return strings.Join(all, "\n")
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprintf(":%d", ln.Addr().(*net.TCPAddr).Port)
}

//go:build linux

package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// nodeProcessEnv makes TestNodeProcess run; its value is the node's
// HeaderTimeout.
const nodeProcessEnv = "NOTIFY_TEST_NODE_PROCESS"

// TestNodeProcess is not a test of its own: it is the node of the tests
// that need one in a process apart, started by startNodeProcess. An open
// files limit is the whole process's, and a node's descriptors, goroutines
// and memory are measured without the test's clients mixed in. It prints
// "addr <host:port>", then answers the commands read from stdin, one line
// each (nodeCommand), until stdin closes.
func TestNodeProcess(t *testing.T) {
	v := os.Getenv(nodeProcessEnv)
	if v == "" {
		t.Skip("the node process of other tests (startNodeProcess)")
	}
	headerTimeout, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", nodeProcessEnv, v, err)
	}
	// No connection limit short of the descriptors: running out of them is
	// what some of these tests are about.
	tn := startNode(t, nil, func(c *Config) { c.HeaderTimeout = headerTimeout; c.MaxConnections = 1 << 30 })
	fmt.Printf("addr %s\n", tn.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		reply, err := tn.nodeCommand(in.Text())
		if err != nil {
			t.Fatalf("%q: %v", in.Text(), err)
		}
		fmt.Println(reply)
	}
}

// procStats is what the node process says of itself; cheap to take.
type procStats struct {
	FDs          int           `json:"fds"` // -1: none left to list them with
	Goroutines   int           `json:"goroutines"`
	CPU          time.Duration `json:"cpu"` // user and system, since start
	AcceptErrors float64       `json:"accept_errors"`
	Paused       float64       `json:"paused"` // notify_accept_paused
	Open         int64         `json:"open"`   // hub.Open
}

// procMem is the node process's memory once the garbage is collected and
// the freed pages returned to the system (without that, the scavenger
// returns them over minutes, and RSS says nothing of what is retained).
type procMem struct {
	HeapAlloc uint64 `json:"heap_alloc"` // live objects, right after a collection
	RSS       uint64 `json:"rss"`
}

// nodeCommand runs one command of the node process:
//
//	nofile N           lower the open files soft limit to N more than open now
//	stats              procStats
//	mem                procMem
//	publish CH PAYLOAD publish PAYLOAD (no spaces) on CH
//
// and returns the reply line, which starts with the command's name.
func (tn *testNode) nodeCommand(line string) (string, error) {
	cmd, arg, _ := strings.Cut(line, " ")
	switch cmd {
	case "nofile":
		room, err := strconv.Atoi(arg)
		if err != nil {
			return "", err
		}
		limit, err := lowerFileLimit(uint64(room))
		return fmt.Sprintf("nofile %d", limit), err
	case "stats":
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return "", err
		}
		s := procStats{FDs: openFDs(), Goroutines: runtime.NumGoroutine(),
			CPU: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
			// The two series alone: gathering the registry would cost more CPU
			// than the node spends while it waits.
			AcceptErrors: testutil.ToFloat64(tn.accepts.errors[acceptEMFILE]),
			Paused:       testutil.ToFloat64(tn.accepts.paused), Open: tn.hub.Open()}
		b, err := json.Marshal(s)
		return "stats " + string(b), err
	case "mem":
		debug.FreeOSMemory() // collects first
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b, err := json.Marshal(procMem{HeapAlloc: ms.HeapAlloc, RSS: vmRSS()})
		return "mem " + string(b), err
	case "publish":
		ch, payload, _ := strings.Cut(arg, " ")
		tn.publish(ch, payload)
		return "publish ok", nil
	}
	return "", fmt.Errorf("unknown command %q", cmd)
}

// openFDs counts this process's descriptors (the one listing them
// included), or -1 when there is none left to list them with.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// lowerFileLimit sets the open files soft limit room above the number of
// descriptors open now, and returns it. Descriptors are numbered from the
// lowest free one, and the limit bounds the number: room is how many more
// can open, whatever high numbers some already have.
func lowerFileLimit(room uint64) (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	open := openFDs() - 1 // not the one that listed them
	if open < 0 {
		return 0, errors.New("cannot list the open descriptors")
	}
	rl.Cur = uint64(open) + room
	return rl.Cur, unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
}

// vmRSS is this process's resident set, in bytes (0: unknown).
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// nodeProcess is a node in a process of its own (TestNodeProcess).
type nodeProcess struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Scanner
	stderr bytes.Buffer // read once the process has ended
	stray  []string     // stdout lines that were no reply (the test framework's)
	ended  bool
	addr   string
}

// startNodeProcess runs TestNodeProcess in this test binary, with a node
// whose header timeout is headerTimeout, and returns once it listens.
func startNodeProcess(t *testing.T, headerTimeout time.Duration) *nodeProcess {
	t.Helper()
	p := startTestProcess(t, exec.Command(os.Args[0], "-test.run=^TestNodeProcess$", "-test.count=1"),
		nodeProcessEnv+"="+headerTimeout.String())
	p.addr = p.call("", "addr")
	return p
}

// startTestProcess starts cmd, a test of this binary, with env added to
// the environment, and stops it when t ends.
func startTestProcess(t *testing.T, cmd *exec.Cmd, env string) *nodeProcess {
	t.Helper()
	p := &nodeProcess{t: t, cmd: cmd}
	p.cmd.Env = append(os.Environ(), env)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewScanner(out)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p
}

// call sends line (unless empty) and returns the reply to it: the rest of
// the next output line that is name or starts with name and a space.
func (p *nodeProcess) call(line, name string) string {
	p.t.Helper()
	if line != "" {
		if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
			p.t.Fatalf("node process: %v", err)
		}
	}
	for p.stdout.Scan() {
		if line := p.stdout.Text(); line == name {
			return ""
		} else if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return rest
		}
		p.stray = append(p.stray, p.stdout.Text())
	}
	err := p.reap()
	p.t.Fatalf("node process ended (%v) before answering %q:\n%s\n%s", err, line, strings.Join(p.stray, "\n"), p.stderr.String())
	return ""
}

func (p *nodeProcess) stats() procStats {
	p.t.Helper()
	var s procStats
	if err := json.Unmarshal([]byte(p.call("stats", "stats")), &s); err != nil {
		p.t.Fatal(err)
	}
	return s
}

func (p *nodeProcess) mem() procMem {
	p.t.Helper()
	var m procMem
	if err := json.Unmarshal([]byte(p.call("mem", "mem")), &m); err != nil {
		p.t.Fatal(err)
	}
	return m
}

func (p *nodeProcess) publish(channel, payload string) {
	p.t.Helper()
	p.call("publish "+channel+" "+payload, "publish")
}

// reap reads what is left of the process's output and waits for it to
// end; one that does not end is killed (and the test then says so).
func (p *nodeProcess) reap() error {
	if p.ended {
		return nil
	}
	p.ended = true
	kill := time.AfterFunc(30*time.Second, func() { _ = p.cmd.Process.Kill() })
	defer kill.Stop()
	for p.stdout.Scan() {
		p.stray = append(p.stray, p.stdout.Text())
	}
	return p.cmd.Wait()
}

// stop closes the process's stdin, which stops its node, and checks that
// it ended well (its own leak check included).
func (p *nodeProcess) stop() {
	p.stdin.Close()
	if err := p.reap(); err != nil {
		p.t.Errorf("node process: %v:\n%s\n%s", err, strings.Join(p.stray, "\n"), p.stderr.String())
	}
}

// dialProcess connects a real WebSocket client for user to the node
// process at addr.
func dialProcess(t *testing.T, addr, user string) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws://"+addr+"/notify/ws", &websocket.DialOptions{
		HTTPHeader: map[string][]string{"Authorization": {"Bearer " + token(t, user, nil, time.Hour)}},
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: t, conn: conn, resp: resp}, nil
}

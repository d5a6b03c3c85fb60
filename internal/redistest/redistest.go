// Package redistest runs a real redis-server for tests.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
)

// readyTimeout bounds how long a started server may take to answer PING.
const readyTimeout = 5 * time.Second

// restartBindTimeout bounds how long Restart retries binding the same port.
const restartBindTimeout = 5 * time.Second

// Server is a real redis-server started on a free 127.0.0.1 port for tests,
// with no persistence (--save "" --appendonly no), its own temp dir, stopped
// by t.Cleanup. Its methods may be called from any goroutine.
type Server struct {
	Addr string // 127.0.0.1:port, the same across Restart

	t     testing.TB
	bin   string
	dir   string
	port  int
	conf  string   // config file, the first argument when set (a sentinel's)
	extra []string // arguments after ours (they win over ours)

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil while stopped
	done chan struct{} // closed when cmd has exited
	err  error         // cmd.Wait's result, valid once done is closed
	logs []string      // log files of every run, for failure reports
}

// Start starts a redis-server. It skips the test when redis-server is not on
// PATH and fails it on other errors.
func Start(t testing.TB) *Server {
	t.Helper()
	return startWith(t, nil)
}

// startWith is Start with setup, when not nil, called for every port tried:
// it sets the server's conf and extra arguments (kept across Restart).
func startWith(t testing.TB, setup func(*Server) error) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed; make test installs it")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)

	// A free port can be taken by someone else between our probe listener
	// closing and redis binding it: try a few ports.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if setup != nil {
			if err := setup(s); err != nil {
				t.Fatalf("redistest: setting up redis-server: %v", err)
			}
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: starting redis-server: %v", lastErr)
	return nil
}

// Stop kills the server and waits for it to exit. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart stops the server (if running) and starts it again on the same port,
// retrying the bind for a few seconds, and waits until it answers PING.
// The data is gone: there is no persistence.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()
	deadline := time.Now().Add(restartBindTimeout)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond) // the port is still held; nothing to poll
	}
}

// Client returns a client of the server, closed by t.Cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ShardNumSub is PUBSUB SHARDNUMSUB of channels on s: how many clients hold
// an SSUBSCRIBE of each here.
func (s *Server) ShardNumSub(t testing.TB, channels ...string) map[string]int64 {
	t.Helper()
	args := []any{"PUBSUB", "SHARDNUMSUB"}
	for _, ch := range channels {
		args = append(args, ch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := s.Client(t).Do(ctx, args...).Slice()
	if err != nil || len(v) != 2*len(channels) {
		t.Fatalf("redistest: PUBSUB SHARDNUMSUB on %s = %v, %v", s.Addr, v, err)
	}
	out := make(map[string]int64, len(channels))
	for i := 0; i+1 < len(v); i += 2 {
		ch, _ := v[i].(string)
		n, _ := v[i+1].(int64)
		out[ch] = n
	}
	return out
}

// serverAt is the server of servers at addr; nil when none is.
func serverAt(servers []*Server, addr string) *Server {
	for _, s := range servers {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// Log returns what the current (or, once stopped, the last) server process
// has written to its log so far: how a test sees what Redis did to a client,
// such as closing it "for overcoming of output buffer limits".
func (s *Server) Log() string {
	s.t.Helper()
	s.mu.Lock()
	path := s.logs[len(s.logs)-1] // Start fails the test before a first log exists
	s.mu.Unlock()
	b, err := os.ReadFile(path)
	if err != nil {
		s.t.Fatalf("redistest: reading the server log: %v", err)
	}
	return string(b)
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill() // SIGKILL also ends a paused process
	<-s.done
	s.cmd = nil
}

// start runs redis-server on s.port and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	logPath := filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", len(s.logs)))
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	var args []string
	if s.conf != "" {
		args = append(args, s.conf)
	}
	args = append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "notice",
	)
	cmd := exec.Command(s.bin, append(args, s.extra...)...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	s.logs = append(s.logs, logPath)
	go func() {
		err := cmd.Wait()
		s.err = err // read only after done is closed
		close(done)
	}()

	exited := false
	ready := await.Poll(readyTimeout, func() bool {
		select {
		case <-done:
			exited = true
			return true
		default:
		}
		return ping(s.Addr) == nil
	})
	switch {
	case exited:
		s.cmd = nil
		return fmt.Errorf("redis-server exited: %v: %s", s.err, tail(logPath))
	case ready:
		return nil
	}
	_ = cmd.Process.Kill()
	<-done
	s.cmd = nil
	return fmt.Errorf("redis-server on %s did not answer PING within %s: %s", s.Addr, readyTimeout, tail(logPath))
}

// ping sends a PING in RESP and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last lines of a log file for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

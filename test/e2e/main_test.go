// Package e2e runs notify as real processes: several nodes on 127.0.0.x, one
// real redis-server, one real haproxy in front (round robin, so most clients
// first land on a node that does not own their user and are relayed), and
// thousands of WebSocket clients that check every message arrives exactly
// once and in order, through joins, graceful stops and crashes.
//
// The tests skip, saying why, only when redis-server or haproxy is not on
// PATH; `make test` installs both.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// notifyBin is the notify binary built once by TestMain (without -race: the
// nodes are the system under test, the race detector runs in this process).
var notifyBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	dir, err := os.MkdirTemp("", "notify-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	notifyBin = filepath.Join(dir, "notify")
	start := time.Now()
	// go test puts its own toolchain's bin first on PATH: this "go" is it.
	cmd := exec.Command("go", "build", "-o", notifyBin, "./cmd/notify")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/notify in %s: %v\n%s", root, err, out)
		return 1
	}
	if testing.Verbose() {
		fmt.Printf("e2e: built %s in %s\n", notifyBin, time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// requireTools skips the test when a program it starts is not on PATH.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("e2e: %s is not on PATH (make test installs it with apt: TEST_TOOLS); skipping", n)
		}
	}
}

//go:build linux && fault

package fault

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// notifyBin is the notify binary TestMain builds (without -race: the nodes
// are the system under test).
var notifyBin string

// skipReason, when set, is why this machine cannot run the suite: every
// test skips with it.
var skipReason string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	flag.Parse()
	skipReason = checkMachine()
	if skipReason != "" {
		return m.Run() // the tests skip, saying why
	}
	// Whatever ends this process, what it created goes: a signal (Ctrl-C,
	// go test's timeout kill is SIGQUIT and cannot be caught cleanly, but
	// the next run sweeps it), a panic in a test (t.Cleanup and this
	// defer), or the normal end.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nfault: %v: stopping the processes and removing the namespaces\n", s)
		teardownAll()
		os.Exit(130)
	}()
	defer teardownAll()
	defer func() {
		if r := recover(); r != nil {
			teardownAll()
			panic(r)
		}
	}()
	if n := sweepStale(); n > 0 {
		fmt.Printf("fault: removed %d namespaces and links left by an earlier run that was killed\n", n)
	}
	dir, err := os.MkdirTemp("", "notify-fault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	notifyBin = filepath.Join(dir, "notify")
	start := time.Now()
	// go test puts its own toolchain first on PATH: this "go" is it.
	cmd := exec.Command("go", "build", "-o", notifyBin, "./cmd/notify")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "fault: go build ./cmd/notify in %s: %v\n%s", root, err, out)
		return 1
	}
	fmt.Printf("fault: built %s in %s\n", notifyBin, time.Since(start).Round(time.Millisecond))
	return m.Run()
}

// checkMachine says why the suite cannot run here, or "".
func checkMachine() string {
	if os.Geteuid() != 0 {
		return "fault: needs root (network namespaces, veth pairs, tc); run make fault as root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "fault: the ip command (iproute2) is not installed"
	}
	if _, err := exec.LookPath("tc"); err != nil {
		return "fault: the tc command (iproute2) is not installed"
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return fmt.Sprintf("fault: ip netns is unavailable here: %v: %s", err, out)
	}
	for _, bin := range []string{"redis-server", "haproxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Sprintf("fault: %s is not on PATH (make deps installs it)", bin)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "fault: /dev/net/tun is missing (the delay and loss emulator needs a TAP device)"
	}
	return ""
}

func requireMachine(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// ---- what teardownAll removes ----

var (
	liveMu    sync.Mutex
	liveProcs = map[*os.Process]string{} // started and not yet reaped
	liveTopos []*topology
	tornDown  bool
)

func untrackProc(p *os.Process) {
	liveMu.Lock()
	delete(liveProcs, p)
	liveMu.Unlock()
}

func trackTopology(tp *topology) {
	liveMu.Lock()
	liveTopos = append(liveTopos, tp)
	liveMu.Unlock()
}

// teardownAll kills every child still running (each also dies with this
// process: Pdeathsig) and removes every namespace, bridge and link this
// run created. Safe to call more than once and from any goroutine.
func teardownAll() {
	liveMu.Lock()
	procs := liveProcs
	liveProcs = map[*os.Process]string{}
	topos := liveTopos
	liveTopos = nil
	tornDown = true
	liveMu.Unlock()
	for p := range procs {
		_ = p.Kill()
	}
	for _, tp := range topos {
		tp.teardown()
	}
}

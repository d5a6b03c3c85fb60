//go:build unix

package node

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

// killLeftovers kills the processes whose command line names dir (the
// browser's profile lives there), after giving them a moment to exit, and
// returns their pids.
func killLeftovers(t *testing.T, dir string) []int {
	find := func() []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err == nil && bytes.Contains(b, []byte(dir)) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	var pids []int
	await.Poll(5*time.Second, func() bool { pids = find(); return len(pids) == 0 })
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Logf("kill %d: %v", pid, err)
		}
	}
	return pids
}

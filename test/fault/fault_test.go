//go:build linux && fault

package fault

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scenarioDef is one of the scenarios.
type scenarioDef struct {
	num   int
	name  string
	run   func(t *testing.T, sc scale, s *scenario)
	short bool // part of make test's subset
}

var scenarioDefs = []scenarioDef{
	{1, "partition-node", partitionNode, false},
	{2, "partition-redis", partitionRedis, true},
	{3, "lossy-peers", lossyPeers, false},
	{4, "sigkill", sigkillNode, true},
	{5, "rolling-restart", rollingRestart, false},
	{6, "redis-outage", redisOutage, true},
	{7, "slow-readers", slowReaders, false},
	{8, "soak", soak, false},
}

// selection reads NOTIFY_FAULT: empty or "all" = every scenario at the
// full load; "short" = make test's subset (2, 4, 6) at the short scale;
// else numbers or names separated by commas. NOTIFY_FAULT_SCALE=short|full
// overrides the scale.
func selection(t *testing.T) ([]scenarioDef, scale) {
	t.Helper()
	spec := strings.TrimSpace(os.Getenv("NOTIFY_FAULT"))
	sc := fullScale
	var out []scenarioDef
	switch spec {
	case "", "all":
		out = scenarioDefs
	case "short":
		sc = shortScale
		for _, d := range scenarioDefs {
			if d.short {
				out = append(out, d)
			}
		}
	default:
		for _, f := range strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || r == ' ' }) {
			i := slices.IndexFunc(scenarioDefs, func(d scenarioDef) bool { return strconv.Itoa(d.num) == f || d.name == f })
			if i < 0 {
				t.Fatalf("NOTIFY_FAULT=%q: no scenario %q (numbers 1-8 or %s)", spec, f, strings.Join(defNames(), ", "))
			}
			out = append(out, scenarioDefs[i])
		}
	}
	switch os.Getenv("NOTIFY_FAULT_SCALE") {
	case "short":
		sc = shortScale
	case "full":
		sc = fullScale
	}
	return out, sc
}

func defNames() []string {
	var n []string
	for _, d := range scenarioDefs {
		n = append(n, d.name)
	}
	return n
}

// TestFault runs the selected scenarios, each on a fresh Redis, nodes and
// haproxy (the namespaces are shared), and prints the table of their lines.
func TestFault(t *testing.T) {
	requireMachine(t)
	defs, sc := selection(t)
	begin := time.Now()
	defer func() {
		printTable()
		fmt.Printf("fault: %d scenarios at the %s scale in %s\n", len(defs), sc.name, time.Since(begin).Round(time.Second))
	}()
	for _, d := range defs {
		t.Run(fmt.Sprintf("%d-%s", d.num, d.name), func(t *testing.T) {
			s := newScenario(t, d.name)
			start := time.Now()
			d.run(t, sc, s)
			t.Logf("%s took %s", d.name, time.Since(start).Round(time.Second))
		})
	}
}

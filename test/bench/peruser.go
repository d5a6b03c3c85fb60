package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The highest per-user rate: per-user runs at rising rates (each message
// to one of o.latencyConns users with one connection each), until one
// loses a message or has a p99 of 50 ms or more.

// maxRateSteps are the rates tried, in order.
var maxRateSteps = []int{20000, 30000, 40000, 50000, 60000, 70000, 80000, 100000}

// maxRateP99 is the p99 a rate must stay under to count.
const maxRateP99 = 50.0 // ms

// maxRate is what the search found: the highest rate that held, and what
// the load generator and the node spent on it.
type maxRate struct {
	rate    int     // messages/s; 0: not even the first step held
	load    float64 // CPU cores the load generator (publisher and clients) used at that rate
	cpu     float64 // CPU cores the node used at that rate
	p99     float64 // ms, at that rate
	failure string  // why the next step did not hold
}

// maxRateRun searches the highest per-user rate with nothing lost and a
// p99 under maxRateP99, each step for at most 5 s. A step that fails is
// tried once more: on two cores shared with the load generator and Redis,
// one stall of a few tens of milliseconds decides a p99.
func (b *bench) maxRateRun() (maxRate, error) {
	var m maxRate
	d := min(b.o.duration, 5*time.Second)
	for _, rate := range maxRateSteps {
		var failure string
		for try := range 2 {
			held, why, err := b.maxRateStep(rate, d)
			if err != nil {
				return m, err
			}
			if why == "" {
				m, failure = held, ""
				break
			}
			failure = why
			if try == 0 {
				info("per-user at %d/s: %s; once more", rate, why)
			}
		}
		if failure != "" {
			m.failure = failure
			return m, nil
		}
	}
	m.failure = "the highest step held"
	return m, nil
}

// maxRateStep runs one step: what it measured, and why it failed ("" when
// it held).
func (b *bench) maxRateStep(rate int, d time.Duration) (maxRate, string, error) {
	t, err := b.timedRunFor("maxrate_"+strconv.Itoa(rate/1000)+"k", rate, d, time.Second,
		func(i int) string { return "notify:user-" + strconv.Itoa(i%b.o.latencyConns) })
	if err != nil {
		return maxRate{}, "", err
	}
	lost, p99 := int64(t.sent)-t.received, percentile(t.hist, 0.99)
	info("per-user at %d/s: sent %d, lost %d, p99 %.2f ms, node %.2f cores, load generator %.2f cores",
		rate, t.sent, lost, p99, t.cpu/d.Seconds(), t.load/d.Seconds())
	switch {
	case t.closed > 0:
		return maxRate{}, fmt.Sprintf("%d connections closed at %d/s", t.closed, rate), nil
	case lost != 0:
		return maxRate{}, fmt.Sprintf("%d lost at %d/s", lost, rate), nil
	case p99 >= maxRateP99:
		return maxRate{}, fmt.Sprintf("p99 %.1f ms at %d/s", p99, rate), nil
	case float64(t.sent) < 0.95*float64(rate)*d.Seconds():
		return maxRate{}, fmt.Sprintf("the publisher reached only %.0f/s of %d/s", float64(t.sent)/d.Seconds(), rate), nil
	}
	return maxRate{rate: rate, load: t.load / d.Seconds(), cpu: t.cpu / d.Seconds(), p99: p99}, "", nil
}

func printMaxRate(m maxRate, figure func(string, float64, string)) {
	info("highest per-user rate: %d/s (next step: %s)", m.rate, m.failure)
	figure("peruser_max_rate", float64(m.rate), "messages/s")
	figure("peruser_max_rate_p99", m.p99, "ms")
	figure("peruser_max_rate_node_cpu", m.cpu, "cores")
	figure("peruser_max_rate_loadgen_cpu", m.load, "cores")
}

// loadCPU is the CPU seconds this process and the client processes used
// so far.
func (b *bench) loadCPU() float64 {
	s := pidCPU(os.Getpid())
	for _, c := range b.clients {
		s += pidCPU(c.cmd.Process.Pid)
	}
	return s
}

// pidCPU is user+system CPU seconds of process pid (/proc/<pid>/stat).
func pidCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// oneCoreRun is the highest per-user rate of a node limited to one core
// (GOMAXPROCS=1, history off), next to the history-off node's on every
// core: how delivery scales with cores.
func oneCoreRun(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2) error {
	return perUserRun(o, redisAddr, rdb, clients, append([]string{"GOMAXPROCS=1"}, historyOff...), "_gomaxprocs1", false)
}

// perUserRun starts a node with env, connects o.latencyConns users, one
// connection each, and prints the highest per-user rate (and first the
// per-user run at o.rate when full), suffix appended to the names.
func perUserRun(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2, env []string, suffix string, full bool) error {
	srv, err := startNotify(o.notify, redisAddr, nodeOpts{name: "bench-peruser", ip: "127.0.0.1", env: env})
	if err != nil {
		return err
	}
	defer srv.stop()
	b := &bench{o: o, rdb: rdb, srv: srv, clients: clients, url: "ws://" + srv.addr + "/notify/ws", suffix: suffix}
	per := o.latencyConns / len(clients)
	for i, c := range clients {
		n := per
		if i == len(clients)-1 {
			n = o.latencyConns - per*(len(clients)-1)
		}
		if r, err := b.connectRange(c, i*per, n); err != nil || r.Failed > 0 {
			return fmt.Errorf("per-user run, client %d: %v failed=%d %s", i, err, r.Failed, r.Err)
		}
	}
	fig := func(name string, v float64, unit string) { figure(name+b.suffix, v, unit) }
	if full {
		t, err := b.latencyRun()
		if err != nil {
			return err
		}
		printPerUser(o, t, fig)
	}
	m, err := b.maxRateRun()
	if err != nil {
		return err
	}
	printMaxRate(m, fig)
	return b.each(command{Cmd: "close"})
}

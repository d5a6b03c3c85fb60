//go:build linux && fault

package fault

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The hosts are network namespaces on one bridge in the root namespace:
//
//	root ns: bridge <prefix>br 10.A.B.1/24, haproxy, the clients, the publisher
//	  ├─ veth <prefix>n1 ── ns <prefix>-n1: eth0 10.A.B.11  notify n1
//	  ├─ veth <prefix>n2 ── ns <prefix>-n2: eth0 10.A.B.12  notify n2
//	  ├─ veth <prefix>n3 ── ns <prefix>-n3: eth0 10.A.B.13  notify n3
//	  └─ veth <prefix>r  ── ns <prefix>-r:  eth0 10.A.B.20  redis-server
//
// prefix is "ntf<pid>", so two runs never share a name; A.B is derived
// from the pid too and moved on while the subnet is routed already.
//
// Faults are applied on the root side of the veth pairs, the "switch
// ports", per source or destination address, so each pair of hosts can be
// cut or slowed on its own and nothing inside the hosts changes:
//   - a partition drops, on the port towards host X, the packets from the
//     hosts X must not hear (an HTB class whose queue is a pfifo of length
//     0, chosen by u32 filters on the source address); both directions are
//     cut by doing it on both ports;
//   - delay and loss: this kernel has no netem (CONFIG_NET_SCH_NETEM is
//     off), so the packets a host sends to its peers are redirected (u32 on
//     the port's ingress, mirred) to a TAP device this process reads; a
//     goroutine drops a share of them and writes the rest back after the
//     delay, and the TAP's ingress redirects each to the port of its
//     destination.

const namePrefix = "ntf"

var (
	staleNetns = regexp.MustCompile(`^` + namePrefix + `([0-9]+)-`)
	staleLink  = regexp.MustCompile(`^` + namePrefix + `([0-9]+)[a-z]`)
)

// host is one namespace on the bridge.
type host struct {
	name string // n1, n2, n3, r
	ns   string // the namespace
	port string // the root side of its veth pair
	ip   string
}

type topology struct {
	prefix string
	bridge string
	gw     string // the bridge's address: the root namespace's address on the subnet
	hosts  map[string]*host

	once sync.Once
}

var (
	topoOnce sync.Once
	topo     *topology
	topoErr  error
)

// sharedTopology creates the namespaces once per run (removed by TestMain,
// a signal, or the next run's sweep).
func sharedTopology(t *testing.T) *topology {
	t.Helper()
	requireMachine(t)
	topoOnce.Do(func() { topo, topoErr = newTopology([]string{"n1", "n2", "n3", "r"}) })
	if topoErr != nil {
		t.Fatalf("fault: creating the network namespaces: %v", topoErr)
	}
	return topo
}

func newTopology(names []string) (*topology, error) {
	pid := os.Getpid()
	tp := &topology{
		prefix: namePrefix + strconv.Itoa(pid),
		hosts:  map[string]*host{},
	}
	tp.bridge = tp.prefix + "br"
	a, b, err := freeSubnet(pid)
	if err != nil {
		return nil, err
	}
	sub := fmt.Sprintf("10.%d.%d.", a, b)
	tp.gw = sub + "1"
	trackTopology(tp)
	if err := run("ip", "link", "add", tp.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "addr", "add", tp.gw + "/24", "dev", tp.bridge},
		{"ip", "link", "set", tp.bridge, "up"},
	}
	for i, name := range names {
		h := &host{name: name, ns: tp.prefix + "-" + name, port: tp.prefix + name}
		if name == "r" {
			h.ip = sub + "20"
		} else {
			h.ip = sub + strconv.Itoa(11+i)
		}
		tp.hosts[name] = h
		peer := h.port + "p"
		steps = append(steps,
			[]string{"ip", "netns", "add", h.ns},
			[]string{"ip", "link", "add", h.port, "type", "veth", "peer", "name", peer},
			[]string{"ip", "link", "set", peer, "netns", h.ns},
			[]string{"ip", "-n", h.ns, "link", "set", peer, "name", "eth0"},
			[]string{"ip", "-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"},
			[]string{"ip", "-n", h.ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", h.ns, "link", "set", "lo", "up"},
			[]string{"ip", "link", "set", h.port, "master", tp.bridge},
			[]string{"ip", "link", "set", h.port, "up"},
		)
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	return tp, nil
}

// freeSubnet picks 10.A.B.0/24 from the pid, moving on while a route to it
// exists already (another run, or the machine's own network).
func freeSubnet(pid int) (int, int, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("ip route: %v: %s", err, out)
	}
	routes := string(out)
	for i := range 2000 {
		n := (pid + i*7919) % (56 * 256)
		a, b := 200+n/256, n%256
		if !strings.Contains(routes, fmt.Sprintf("10.%d.%d.", a, b)) {
			return a, b, nil
		}
	}
	return 0, 0, errors.New("no free 10.200-255.x.0/24 subnet")
}

func (tp *topology) host(name string) *host {
	h := tp.hosts[name]
	if h == nil {
		panic("fault: no host " + name)
	}
	return h
}

// teardown removes the veth pairs, the namespaces and the
// bridge. The processes inside are killed first by teardownAll.
func (tp *topology) teardown() {
	tp.once.Do(func() {
		for _, h := range tp.hosts {
			// The pair goes at once with its root end; the namespace itself
			// may outlive its name a while (orphaned TCP sockets finishing).
			_ = run("ip", "link", "del", h.port)
			_ = run("ip", "netns", "del", h.ns)
		}
		_ = run("ip", "link", "del", tp.bridge)
	})
}

// sweepStale removes the namespaces and links of earlier runs whose process
// is gone (a run killed with SIGKILL, or by go test's timeout), and returns
// how many it removed.
func sweepStale() int {
	dead := func(pidStr string) bool {
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			return false
		}
		if pid == os.Getpid() {
			return true // a recycled pid: the names are about to be ours
		}
		comm, err := os.ReadFile("/proc/" + pidStr + "/comm")
		return err != nil || !strings.HasPrefix(strings.TrimSpace(string(comm)), "fault.test")
	}
	n := 0
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if m := staleNetns.FindStringSubmatch(f[0]); m != nil && dead(m[1]) {
				if run("ip", "netns", "del", f[0]) == nil {
					n++
				}
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if m := staleLink.FindStringSubmatch(name); m != nil && dead(m[1]) {
				if run("ip", "link", "del", name) == nil {
					n++
				}
			}
		}
	}
	return n
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ---- partitions ----

// partition drops every packet between each host of a and each host of b,
// both directions, until the returned heal is called (also by t.Cleanup).
func (tp *topology) partition(t *testing.T, a, b []string) (heal func()) {
	t.Helper()
	drop := map[string][]string{} // host -> the hosts whose packets it must not get
	for _, x := range a {
		for _, y := range b {
			drop[x] = append(drop[x], y)
			drop[y] = append(drop[y], x)
		}
	}
	var ports []string
	for x, from := range drop {
		h := tp.host(x)
		ports = append(ports, h.port)
		cmds := [][]string{
			{"tc", "qdisc", "replace", "dev", h.port, "root", "handle", "1:", "htb", "default", "10"},
			{"tc", "class", "add", "dev", h.port, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit", "quantum", "60000"},
			{"tc", "class", "add", "dev", h.port, "parent", "1:", "classid", "1:20", "htb", "rate", "10gbit", "quantum", "60000"},
			{"tc", "qdisc", "add", "dev", h.port, "parent", "1:20", "handle", "20:", "pfifo", "limit", "0"},
		}
		for _, y := range from {
			cmds = append(cmds, []string{"tc", "filter", "add", "dev", h.port, "parent", "1:", "protocol", "ip", "prio", "1",
				"u32", "match", "ip", "src", tp.host(y).ip + "/32", "flowid", "1:20"})
		}
		for _, c := range cmds {
			if err := run(c[0], c[1:]...); err != nil {
				t.Fatalf("partition %v | %v: %v", a, b, err)
			}
		}
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, p := range ports {
				if err := run("tc", "qdisc", "del", "dev", p, "root"); err != nil {
					t.Errorf("heal: %v", err)
				}
			}
		})
	}
	t.Cleanup(heal)
	return heal
}

// ---- delay and loss ----

// emulator is netem in user space: frames come in on a TAP device, a share
// of them is dropped, the rest go back out after the delay, in order.
type emulator struct {
	tap     string
	f       *os.File
	loss    float64
	delay   time.Duration
	queue   chan frame
	wg      sync.WaitGroup
	passed  atomic.Int64
	dropped atomic.Int64
}

type frame struct {
	due time.Time
	b   []byte
}

// impair makes every packet between two hosts of names (both directions)
// go through the emulator: loss is the share dropped, delay is added to
// the rest. The returned stop ends it (also by t.Cleanup) and reports what
// passed and what was dropped.
func (tp *topology) impair(t *testing.T, names []string, loss float64, delay time.Duration) (stop func() (passed, dropped int64)) {
	t.Helper()
	e := &emulator{tap: tp.prefix + "tap", loss: loss, delay: delay, queue: make(chan frame, 1<<16)}
	f, err := openTap(e.tap)
	if err != nil {
		t.Fatalf("impair: %v", err)
	}
	e.f = f
	cmds := [][]string{
		{"ip", "link", "set", e.tap, "up"},
		{"tc", "qdisc", "add", "dev", e.tap, "clsact"},
	}
	for _, x := range names {
		hx := tp.host(x)
		cmds = append(cmds,
			[]string{"tc", "filter", "add", "dev", e.tap, "ingress", "protocol", "ip", "prio", "1",
				"u32", "match", "ip", "dst", hx.ip + "/32", "action", "mirred", "egress", "redirect", "dev", hx.port},
			[]string{"tc", "qdisc", "add", "dev", hx.port, "clsact"})
		for _, y := range names {
			if y == x {
				continue
			}
			cmds = append(cmds, []string{"tc", "filter", "add", "dev", hx.port, "ingress", "protocol", "ip", "prio", "1",
				"u32", "match", "ip", "dst", tp.host(y).ip + "/32", "action", "mirred", "egress", "redirect", "dev", e.tap})
		}
	}
	e.wg.Add(2)
	go e.read()
	go e.write()
	var once sync.Once
	stop = func() (int64, int64) {
		once.Do(func() {
			for _, x := range names {
				_ = run("tc", "qdisc", "del", "dev", tp.host(x).port, "clsact")
			}
			// What is still delayed goes out, then the TAP goes away with
			// its descriptor.
			time.Sleep(delay + 100*time.Millisecond)
			_ = e.f.Close()
			e.wg.Wait()
		})
		return e.passed.Load(), e.dropped.Load()
	}
	t.Cleanup(func() { stop() })
	for _, c := range cmds {
		if err := run(c[0], c[1:]...); err != nil {
			t.Fatalf("impair %v: %v", names, err)
		}
	}
	return stop
}

func (e *emulator) read() {
	defer e.wg.Done()
	defer close(e.queue)
	buf := make([]byte, 1<<16)
	for {
		n, err := e.f.Read(buf)
		if err != nil {
			return
		}
		if rand.Float64() < e.loss {
			e.dropped.Add(1)
			continue
		}
		select {
		case e.queue <- frame{due: time.Now().Add(e.delay), b: bytes.Clone(buf[:n])}:
		default:
			e.dropped.Add(1) // a full queue drops, as a router's would
		}
	}
}

func (e *emulator) write() {
	defer e.wg.Done()
	for fr := range e.queue {
		if d := time.Until(fr.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := e.f.Write(fr.b); err == nil {
			e.passed.Add(1)
		}
	}
}

// openTap creates a TAP device (no packet information header) that lives
// as long as the returned file.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:unix.IFNAMSIZ-1], name)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, e)
	}
	// Non-blocking, so that the runtime poller serves it and Close ends a
	// Read in progress.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

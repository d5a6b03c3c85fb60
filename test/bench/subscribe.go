package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/ring"
)

// subscribeModes are the NOTIFY_SUBSCRIBE_MODE values compared on one
// server; on a Cluster, sharded too.
var subscribeModes = []string{"pattern", "user"}

// modeRedis is the Redis a subscribe-mode run uses: how nodes reach it,
// the application's client that publishes, and every server, whose INFO
// adds up to Redis's cost.
type modeRedis struct {
	name    string // "" for the single server, "cluster_" for the Cluster: in the figures' names
	addr    string // PUBSUB_REDIS_ADDR; "" on the Cluster
	env     []string
	pub     redis.UniversalClient
	servers []*redis.Client
}

func (r modeRedis) cpu() (s float64) {
	for _, c := range r.servers {
		s += redisCPU(c)
	}
	return s
}

func (r modeRedis) egress() (s float64) {
	for _, c := range r.servers {
		s += redisInfo(c, "stats")["total_net_output_bytes"]
	}
	return s
}

// subscribeRun compares what Redis and the nodes spend per delivered
// message in each subscribe mode, at 1, 2 and 3 nodes with the same load
// per node (o.modeUsers users, one connection each, on their owner; o.modeRate
// messages/s per node, plain PUBLISH, or SPUBLISH when sharded, to one user
// each): Redis CPU seconds per million deliveries, Redis egress bytes per
// delivery (INFO stats total_net_output_bytes) and node CPU per delivery.
// First on the one server, then on a 3-master Redis Cluster (all three
// modes, the Redis figures summed over the masters).
func subscribeRun(o options, dir, redisAddr string, rdb *redis.Client, clients []*clientProc2) error {
	single := modeRedis{addr: redisAddr, pub: rdb, servers: []*redis.Client{rdb}}
	if err := subscribeModesOn(o, single, subscribeModes, clients); err != nil {
		return err
	}
	cl, stop, err := startModeCluster3(dir)
	if err != nil {
		return err
	}
	defer stop()
	return subscribeModesOn(o, cl, append(subscribeModes, "sharded"), clients)
}

func subscribeModesOn(o options, r modeRedis, modes []string, clients []*clientProc2) error {
	for _, mode := range modes {
		for nodes := 1; nodes <= 3; nodes++ {
			if err := subscribeRunOne(o, r, clients, mode, nodes); err != nil {
				return fmt.Errorf("subscribe mode %s, %s%d nodes: %w", mode, r.name, nodes, err)
			}
		}
	}
	return nil
}

// startModeCluster3 starts a Redis Cluster of three masters.
func startModeCluster3(dir string) (modeRedis, func(), error) {
	r := modeRedis{name: "cluster_"}
	var stops []func()
	stop := func() {
		for _, c := range r.servers {
			_ = c.Close()
		}
		if r.pub != nil {
			_ = r.pub.Close()
		}
		for _, s := range stops {
			s()
		}
	}
	var addrs []string
	for i := range 3 {
		sub := filepath.Join(dir, "cluster-"+strconv.Itoa(i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return r, stop, err
		}
		addr, s, err := startRedis(sub, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		if err != nil {
			stop()
			return r, func() {}, err
		}
		stops = append(stops, s)
		addrs = append(addrs, addr)
		r.servers = append(r.servers, redis.NewClient(&redis.Options{Addr: addr}))
	}
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		stop()
		return r, func() {}, fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	for _, c := range r.servers {
		for i := 0; !strings.Contains(c.ClusterInfo(context.Background()).Val(), "cluster_state:ok"); i++ {
			if i > 300 {
				stop()
				return r, func() {}, errors.New("the Redis Cluster is not ok after 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	r.env = []string{"PUBSUB_REDIS_ADDR=", "REDIS_CLUSTER_ADDRS=" + strings.Join(addrs, ",")}
	r.pub = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 4})
	return r, stop, nil
}

// modeCost is what one subscribe-mode run measured.
type modeCost struct {
	sent, delivered   int64
	redisCPU, nodeCPU float64 // seconds
	egress            float64 // bytes Redis sent
}

func subscribeRunOne(o options, r modeRedis, clients []*clientProc2, mode string, nodes int) error {
	procs, users, err := startModeCluster(o, r, mode, nodes)
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	if err != nil {
		return err
	}
	for i, p := range procs {
		c := clients[i%len(clients)]
		rep, err := c.call(command{Cmd: "connect", URL: "ws://" + p.addr + "/notify/ws", Src: c.src, Users: users[i], Secret: secret, Concurrency: o.concurrency})
		if err != nil || rep.Failed > 0 {
			return fmt.Errorf("connect to node %d: %v %+v", i, err, rep)
		}
	}
	var all []string
	for _, u := range users {
		all = append(all, u...)
	}
	m, err := measureModeCost(o, r, mode == "sharded", clients, procs, all)
	for _, c := range clients {
		if _, cerr := c.call(command{Cmd: "close"}); cerr != nil && err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	printModeCost(r.name+mode, nodes, m)
	return nil
}

// startModeCluster starts nodes clustered nodes in mode, without history
// (plain PUBLISH), and picks o.modeUsers users owned by each.
func startModeCluster(o options, r modeRedis, mode string, nodes int) ([]*notifyProc, [][]string, error) {
	var procs []*notifyProc
	var names, join []string
	for i := range nodes {
		name := "bench-" + mode + "-" + strconv.Itoa(i)
		p, err := startNotify(o.notify, r.addr, nodeOpts{name: name, ip: "127.0.0." + strconv.Itoa(30+i), join: join,
			env: append([]string{"NOTIFY_SUBSCRIBE_MODE=" + mode, "NOTIFY_HISTORY_SIZE=0"}, r.env...)})
		if err != nil {
			return procs, nil, err
		}
		procs, names, join = append(procs, p), append(names, name), append(join, p.gossip)
	}
	for _, p := range procs {
		if err := p.waitRingMembers(nodes); err != nil {
			return procs, nil, err
		}
	}
	rg, err := ring.New(ring.DefaultConfig(), names)
	if err != nil {
		return procs, nil, err
	}
	users := make([][]string, nodes)
	for i, full := 0, 0; full < nodes; i++ {
		u := "mode-user-" + strconv.Itoa(i)
		n := slices.Index(names, rg.Locate(u))
		if n >= 0 && len(users[n]) < o.modeUsers {
			if users[n] = append(users[n], u); len(users[n]) == o.modeUsers {
				full++
			}
		}
	}
	return procs, users, nil
}

// measureModeCost publishes o.modeRate messages/s per node, round robin
// over users, for o.duration, and reads what it cost.
func measureModeCost(o options, r modeRedis, sharded bool, clients []*clientProc2, procs []*notifyProc, users []string) (modeCost, error) {
	var m modeCost
	for _, c := range clients {
		if _, err := c.call(command{Cmd: "reset"}); err != nil {
			return m, err
		}
	}
	nodeCPU := func() (s float64) {
		for _, p := range procs {
			s += p.cpu()
		}
		return s
	}
	r0, n0, e0 := r.cpu(), nodeCPU(), r.egress()
	m.sent = int64(publishWith(r.pub, sharded, o.modeRate*len(procs), o.duration, func(i int) string { return "notify:" + users[i%len(users)] }))
	time.Sleep(time.Second)
	m.redisCPU, m.nodeCPU, m.egress = r.cpu()-r0, nodeCPU()-n0, r.egress()-e0
	_, received, _, err := collect(clients)
	m.delivered = received
	return m, err
}

func printModeCost(mode string, nodes int, m modeCost) {
	if m.delivered == 0 {
		info("subscribe mode %s, %d nodes: nothing delivered", mode, nodes)
		return
	}
	name := fmt.Sprintf("subscribe_%s_%dnodes", mode, nodes)
	d := float64(m.delivered)
	info("%s: published %d, delivered %d", name, m.sent, m.delivered)
	figure(name+"_redis_cpu_per_million_delivered", m.redisCPU/d*1e6, "s")
	figure(name+"_redis_egress_per_delivered", m.egress/d, "bytes")
	figure(name+"_node_cpu_per_delivered", m.nodeCPU/d*1e6, "us")
	figure(name+"_lost", float64(m.sent-m.delivered), "messages")
}

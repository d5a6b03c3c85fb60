package main

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/ring"
)

// subscribeModes are the NOTIFY_SUBSCRIBE_MODE values compared.
var subscribeModes = []string{"pattern", "user"}

// subscribeRun compares what Redis and the nodes spend per delivered
// message in each subscribe mode, at 1, 2 and 3 nodes with the same load
// per node (o.modeUsers users, one connection each, on their owner; o.modeRate
// messages/s per node, plain PUBLISH to one user each): Redis CPU seconds
// per million deliveries, Redis egress bytes per delivery (INFO stats
// total_net_output_bytes) and node CPU per delivery.
func subscribeRun(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2) error {
	for _, mode := range subscribeModes {
		for nodes := 1; nodes <= 3; nodes++ {
			if err := subscribeRunOne(o, redisAddr, rdb, clients, mode, nodes); err != nil {
				return fmt.Errorf("subscribe mode %s, %d nodes: %w", mode, nodes, err)
			}
		}
	}
	return nil
}

// modeCost is what one subscribe-mode run measured.
type modeCost struct {
	sent, delivered   int64
	redisCPU, nodeCPU float64 // seconds
	egress            float64 // bytes Redis sent
}

func subscribeRunOne(o options, redisAddr string, rdb *redis.Client, clients []*clientProc2, mode string, nodes int) error {
	procs, users, err := startModeCluster(o, redisAddr, mode, nodes)
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
	m, err := measureModeCost(o, rdb, clients, procs, all)
	for _, c := range clients {
		if _, cerr := c.call(command{Cmd: "close"}); cerr != nil && err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	printModeCost(mode, nodes, m)
	return nil
}

// startModeCluster starts nodes clustered nodes in mode, without history
// (plain PUBLISH), and picks o.modeUsers users owned by each.
func startModeCluster(o options, redisAddr, mode string, nodes int) ([]*notifyProc, [][]string, error) {
	var procs []*notifyProc
	var names, join []string
	for i := range nodes {
		name := "bench-" + mode + "-" + strconv.Itoa(i)
		p, err := startNotify(o.notify, redisAddr, nodeOpts{name: name, ip: "127.0.0." + strconv.Itoa(30+i), join: join,
			env: []string{"NOTIFY_SUBSCRIBE_MODE=" + mode, "NOTIFY_HISTORY_SIZE=0"}})
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
	r, err := ring.New(ring.DefaultConfig(), names)
	if err != nil {
		return procs, nil, err
	}
	users := make([][]string, nodes)
	for i, full := 0, 0; full < nodes; i++ {
		u := "mode-user-" + strconv.Itoa(i)
		n := slices.Index(names, r.Locate(u))
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
func measureModeCost(o options, rdb *redis.Client, clients []*clientProc2, procs []*notifyProc, users []string) (modeCost, error) {
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
	egress := func() float64 { return redisInfo(rdb, "stats")["total_net_output_bytes"] }
	r0, n0, e0 := redisCPU(rdb), nodeCPU(), egress()
	m.sent = int64(publish(rdb, o.modeRate*len(procs), o.duration, func(i int) string { return "notify:" + users[i%len(users)] }))
	time.Sleep(time.Second)
	m.redisCPU, m.nodeCPU, m.egress = redisCPU(rdb)-r0, nodeCPU()-n0, egress()-e0
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

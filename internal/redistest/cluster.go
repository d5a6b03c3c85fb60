package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
)

// clusterNodeTimeout is the servers' cluster-node-timeout: how long until
// the others mark an unreachable master as failing.
const clusterNodeTimeout = 2000 * time.Millisecond

// clusterSettle bounds how long the cluster takes to agree it is whole:
// after creation, and after a stopped master is back (the others clear its
// FAIL flag some node timeouts later).
const clusterSettle = 30 * time.Second

// Cluster is a Redis Cluster of masters only (no replicas) on free
// 127.0.0.1 ports, stopped by t.Cleanup. A master stopped and restarted
// (Server.Stop, Server.Restart) keeps its node id and slots through its
// nodes.conf, but not its data: there is no persistence.
type Cluster struct {
	Masters []*Server

	t     testing.TB
	slots *redis.ClusterClient // what MasterFor asks (the addresses survive a Restart)
}

// StartCluster starts masters servers (3 or more) with cluster mode on,
// joins them with redis-cli --cluster create, the slots spread evenly, and
// returns once every one reports cluster_state:ok. It skips the test when
// redis-server or redis-cli is missing.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a Redis Cluster needs 3 masters or more, not %d", masters)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not installed; make test installs redis-server, which brings it")
	}
	c := &Cluster{t: t}
	for range masters {
		c.Masters = append(c.Masters, startWith(t, clusterSetup))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v: %s", err, out)
	}
	c.WaitOK()
	c.slots = c.Client(t)
	return c
}

// clusterSetup turns cluster mode on, with a bus port of its own: the
// default (port + 10000) may be taken, or above 65535.
func clusterSetup(s *Server) error {
	bus, err := freePort()
	if err != nil {
		return err
	}
	s.extra = []string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf", // in the server's own dir
		"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
		"--cluster-port", strconv.Itoa(bus),
	}
	return nil
}

// Addrs returns the masters' addresses, the seeds of a client.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Masters))
	for i, s := range c.Masters {
		addrs[i] = s.Addr
	}
	return addrs
}

// WaitOK waits until every running master reports cluster_state:ok.
func (c *Cluster) WaitOK() {
	c.t.Helper()
	c.waitState("ok")
}

// WaitFail waits until every running master reports cluster_state:fail: a
// stopped master has been unreachable for the node timeout (2 s), and the
// others refuse commands on keys (CLUSTERDOWN).
func (c *Cluster) WaitFail() {
	c.t.Helper()
	c.waitState("fail")
}

// OK tells whether every running master reports cluster_state:ok.
func (c *Cluster) OK() bool {
	for _, s := range c.Masters {
		if s.running() && !strings.Contains(clusterInfo(s.Addr), "cluster_state:ok") {
			return false
		}
	}
	return true
}

func (c *Cluster) waitState(state string) {
	c.t.Helper()
	for _, s := range c.Masters {
		if !s.running() {
			continue
		}
		await.Within(c.t, clusterSettle, s.Addr+" reporting cluster_state:"+state, func() bool {
			return strings.Contains(clusterInfo(s.Addr), "cluster_state:"+state)
		})
	}
}

// Client returns a cluster client, closed by t.Cleanup.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// MasterFor returns the master that serves key's slot.
func (c *Cluster) MasterFor(key string) *Server {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := c.slots.MasterForKey(ctx, key)
	if err != nil {
		c.t.Fatalf("redistest: the master of %s: %v", key, err)
	}
	if s := serverAt(c.Masters, m.Options().Addr); s != nil {
		return s
	}
	c.t.Fatalf("redistest: %s, the master of %s, is none of ours", m.Options().Addr, key)
	return nil
}

// clusterInfo returns CLUSTER INFO of the server at addr, "" on errors.
func clusterInfo(addr string) string {
	cl := redis.NewClient(&redis.Options{Addr: addr, DialerRetries: 1, MaxRetries: -1})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, _ := cl.ClusterInfo(ctx).Result()
	return s
}

// running tells whether the server process is up.
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// SlotOwner returns the master serving slot, as the first running master
// reports it (CLUSTER SHARDS).
func (c *Cluster) SlotOwner(slot int) *Server {
	c.t.Helper()
	for _, s := range c.Masters {
		if !s.running() {
			continue
		}
		addr, err := slotOwner(s.Addr, slot)
		if err != nil {
			c.t.Fatalf("redistest: the owner of slot %d: %v", slot, err)
		}
		return c.server(addr)
	}
	c.t.Fatal("redistest: no master running")
	return nil
}

func slotOwner(at string, slot int) (string, error) {
	cl := redis.NewClient(&redis.Options{Addr: at, DialerRetries: 1, MaxRetries: -1})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		return "", err
	}
	for _, s := range shards {
		for _, r := range s.Slots {
			if int(r.Start) > slot || slot > int(r.End) {
				continue
			}
			for _, n := range s.Nodes {
				if n.Role == "master" {
					return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10)), nil
				}
			}
		}
	}
	return "", fmt.Errorf("slot %d has no master", slot)
}

func (c *Cluster) server(addr string) *Server {
	c.t.Helper()
	if s := serverAt(c.Masters, addr); s != nil {
		return s
	}
	c.t.Fatalf("redistest: %s is none of our masters", addr)
	return nil
}

// ShardNumSub sums PUBSUB SHARDNUMSUB of channels over the running
// masters: a channel counts on the master of its slot only.
func (c *Cluster) ShardNumSub(channels ...string) map[string]int64 {
	c.t.Helper()
	sum := make(map[string]int64, len(channels))
	for _, m := range c.Masters {
		if !m.running() {
			continue
		}
		for ch, n := range m.ShardNumSub(c.t, channels...) {
			sum[ch] += n
		}
	}
	return sum
}

// MigrateSlot moves slot, with its keys, from the master serving it to
// the master to, the way redis-cli --cluster reshard does: IMPORTING on
// to, MIGRATING on the source, MIGRATE of every key, then SETSLOT NODE on
// both and on every other master. It returns once every master reports
// to as the slot's owner.
func (c *Cluster) MigrateSlot(slot int, to *Server) {
	c.t.Helper()
	from := c.SlotOwner(slot)
	if from == to {
		c.t.Fatalf("redistest: slot %d is on %s already", slot, to.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, dst := from.Client(c.t), to.Client(c.t)
	srcID, err := src.ClusterMyID(ctx).Result()
	if err != nil {
		c.t.Fatal(err)
	}
	dstID, err := dst.ClusterMyID(ctx).Result()
	if err != nil {
		c.t.Fatal(err)
	}
	s := strconv.Itoa(slot)
	must := func(cl *redis.Client, args ...any) {
		if err := cl.Do(ctx, args...).Err(); err != nil {
			c.t.Fatalf("redistest: migrating slot %d: %v: %v", slot, args, err)
		}
	}
	must(dst, "CLUSTER", "SETSLOT", s, "IMPORTING", srcID)
	must(src, "CLUSTER", "SETSLOT", s, "MIGRATING", dstID)
	host, port, _ := strings.Cut(to.Addr, ":")
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil {
			c.t.Fatal(err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(src, args...)
	}
	must(dst, "CLUSTER", "SETSLOT", s, "NODE", dstID)
	must(src, "CLUSTER", "SETSLOT", s, "NODE", dstID)
	for _, m := range c.Masters {
		if m != from && m != to && m.running() {
			must(m.Client(c.t), "CLUSTER", "SETSLOT", s, "NODE", dstID)
		}
	}
	for _, m := range c.Masters {
		if !m.running() {
			continue
		}
		await.Within(c.t, clusterSettle, m.Addr+" reporting slot "+s+" on "+to.Addr, func() bool {
			addr, err := slotOwner(m.Addr, slot)
			return err == nil && addr == to.Addr
		})
	}
	c.slots.ReloadState(ctx)
}

package redistest

import (
	"context"
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
	for _, s := range c.Masters {
		if s.Addr == m.Options().Addr {
			return s
		}
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

package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/await"
)

// SentinelMaster is the name StartSentinel's sentinels monitor the master
// under.
const SentinelMaster = "mymaster"

// Sentinel timings: short, so that a test sees a failover within seconds;
// failover-timeout also bounds how long a failover may take.
const (
	sentinelDownAfter       = 1000 * time.Millisecond
	sentinelFailoverTimeout = 5000 * time.Millisecond
	// sentinelSettle bounds how long the sentinels take to find the replica
	// and each other (they say hello every 2 s) and a failover to settle.
	sentinelSettle = 20 * time.Second
)

// Sentinel is a master, its replica and three sentinels monitoring them
// under SentinelMaster with quorum 2, all on free 127.0.0.1 ports and
// stopped by t.Cleanup.
type Sentinel struct {
	// Servers are the data servers: [0] started as the master, [1] as its
	// replica. Failover swaps their roles.
	Servers []*Server
	// Sentinels are the three sentinels.
	Sentinels []*Server

	t testing.TB
}

// StartSentinel starts the master, the replica (--replicaof), then the
// sentinels, and returns once every sentinel knows the replica and the
// other two sentinels. It skips the test when redis-server is missing.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	master := Start(t)
	replica := startWith(t, func(s *Server) error {
		s.extra = []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.port)}
		return nil
	})
	waitReplicating(t, replica.Addr)
	st := &Sentinel{Servers: []*Server{master, replica}, t: t}
	for range 3 {
		st.Sentinels = append(st.Sentinels, startWith(t, func(s *Server) error {
			return writeSentinelConf(s, master.port)
		}))
	}
	for _, s := range st.Sentinels {
		await.Within(t, sentinelSettle, "sentinel "+s.Addr+" knowing the replica and the other sentinels", func() bool {
			return sentinelKnowsAll(s.Addr, len(st.Sentinels)-1)
		})
	}
	return st
}

// writeSentinelConf writes s's config file (a sentinel rewrites it, so it
// lives in s's own dir) and makes s a sentinel.
func writeSentinelConf(s *Server, masterPort int) error {
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\n"+
		"sentinel down-after-milliseconds %[1]s %[3]d\n"+
		"sentinel failover-timeout %[1]s %[4]d\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		SentinelMaster, masterPort, sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
	s.conf = filepath.Join(s.dir, "sentinel.conf")
	s.extra = []string{"--sentinel"}
	return os.WriteFile(s.conf, []byte(conf), 0o644)
}

// Addrs returns the sentinels' addresses.
func (st *Sentinel) Addrs() []string {
	addrs := make([]string, len(st.Sentinels))
	for i, s := range st.Sentinels {
		addrs[i] = s.Addr
	}
	return addrs
}

// MasterAddr returns the master's address as the first sentinel reports it.
func (st *Sentinel) MasterAddr() string {
	st.t.Helper()
	addr, err := masterBy(st.Sentinels[0].Addr)
	if err != nil {
		st.t.Fatalf("redistest: asking sentinel %s for the master: %v", st.Sentinels[0].Addr, err)
	}
	return addr
}

// Server returns the data server at addr, failing the test if none is.
func (st *Sentinel) Server(addr string) *Server {
	st.t.Helper()
	if s := serverAt(st.Servers, addr); s != nil {
		return s
	}
	st.t.Fatalf("redistest: no data server at %s", addr)
	return nil
}

// Failover forces a failover (SENTINEL FAILOVER on a sentinel) and returns
// the new master's address once every sentinel names it and it says it is a
// master. The old master becomes its replica later, when the sentinels
// reconfigure it (several seconds).
func (st *Sentinel) Failover() string {
	st.t.Helper()
	old := st.MasterAddr()
	sc := redis.NewSentinelClient(&redis.Options{Addr: st.Sentinels[0].Addr})
	defer sc.Close()
	var lastErr error
	// A sentinel refuses (NOGOODSLAVE) until it has seen the replica
	// healthy since the last failover: retry until it accepts.
	await.Within(st.t, sentinelSettle, "SENTINEL FAILOVER accepted", func() bool {
		lastErr = sc.Failover(context.Background(), SentinelMaster).Err()
		return lastErr == nil
	})
	var now string
	await.Within(st.t, sentinelSettle, "every sentinel naming the new master", func() bool {
		now = ""
		for _, s := range st.Sentinels {
			addr, err := masterBy(s.Addr)
			if err != nil || addr == old || (now != "" && addr != now) {
				return false
			}
			now = addr
		}
		return role(now) == "master"
	})
	return now
}

// WaitReplicas waits until every data server but the master replicates
// from it (the sentinels reconfigure a former master some seconds after a
// failover).
func (st *Sentinel) WaitReplicas() {
	st.t.Helper()
	master := st.MasterAddr()
	for _, s := range st.Servers {
		if s.Addr == master {
			continue
		}
		await.Within(st.t, sentinelSettle, s.Addr+" replicating from "+master, func() bool {
			info := infoOf(s.Addr, "replication")
			_, port, _ := net.SplitHostPort(master)
			return strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+port) &&
				strings.Contains(info, "master_link_status:up")
		})
	}
}

// sentinelKnowsAll: the sentinel at addr monitors a master with one healthy
// replica, and knows others other sentinels.
func sentinelKnowsAll(addr string, others int) bool {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	replicas, err := sc.Replicas(ctx, SentinelMaster).Result()
	if err != nil || len(replicas) != 1 || strings.Contains(replicas[0]["flags"], "down") {
		return false
	}
	sentinels, err := sc.Sentinels(ctx, SentinelMaster).Result()
	return err == nil && len(sentinels) == others
}

// masterBy asks the sentinel at addr for the master's address.
func masterBy(addr string) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("get-master-addr-by-name answered %q", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// waitReplicating waits until the replica at addr has synced with its
// master.
func waitReplicating(t testing.TB, addr string) {
	t.Helper()
	await.Within(t, sentinelSettle, addr+" replicating", func() bool {
		return strings.Contains(infoOf(addr, "replication"), "master_link_status:up")
	})
}

// role is what INFO replication at addr says it is ("master", "slave"),
// "" when it does not answer.
func role(addr string) string {
	for _, line := range strings.Split(infoOf(addr, "replication"), "\n") {
		if r, ok := strings.CutPrefix(strings.TrimSpace(line), "role:"); ok {
			return r
		}
	}
	return ""
}

// infoOf returns INFO section of the server at addr, "" on errors.
func infoOf(addr, section string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, DialerRetries: 1, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, _ := c.Info(ctx, section).Result()
	return s
}

package broker

import (
	"cmp"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisTopology is how a Redis broker reaches Redis, as go-redis options:
// exactly one field is set. RedisConfig.Topology builds it from the
// settings; NewRedisTopology adds the broker's own defaults.
type RedisTopology struct {
	// Single is one server (PUBSUB_REDIS_ADDR, REDIS_URL).
	Single *redis.Options
	// Sentinel is the master the sentinels name (REDIS_SENTINEL_ADDRS,
	// REDIS_SENTINEL_MASTER): go-redis asks them for it on every dial and
	// drops its pooled connections to a master they have replaced.
	Sentinel *redis.FailoverOptions
	// Cluster is a Redis Cluster (REDIS_CLUSTER_ADDRS): commands go to the
	// master of their key's slot; the subscription is classic pub/sub on
	// one node, which the cluster bus brings every node's publishes to.
	Cluster *redis.ClusterOptions
}

// Default ports of the addresses in REDIS_SENTINEL_ADDRS and
// REDIS_CLUSTER_ADDRS that name a host only.
const (
	defaultSentinelPort = "26379"
	defaultClusterPort  = defaultRedisPort
)

// topologyNames names the settings that select each topology, for errors.
const topologyNames = "a single server (PUBSUB_REDIS_ADDR or REDIS_URL), Sentinel (REDIS_SENTINEL_ADDRS with REDIS_SENTINEL_MASTER) or a Cluster (REDIS_CLUSTER_ADDRS)"

// Validate checks the settings: nil when no Redis is configured at all, or
// when Topology would succeed. Errors name the environment variables and
// never contain a password.
func (c RedisConfig) Validate() error {
	if c.Enabled() {
		_, err := c.Topology()
		return err
	}
	for _, s := range []struct{ name, value string }{
		{"REDIS_USERNAME", c.Username}, {"REDIS_PASSWORD", c.Password}, {"REDIS_SENTINEL_PASSWORD", c.SentinelPassword},
	} {
		if s.value != "" {
			return fmt.Errorf("%s is set but no Redis is: configure %s", s.name, topologyNames)
		}
	}
	return nil
}

// Topology parses and checks the settings into the options of the one
// topology they select. Errors name the settings by their environment
// names and never contain a password.
func (c RedisConfig) Topology() (RedisTopology, error) {
	var chosen []string
	if c.Addr != "" || c.URL != "" {
		chosen = append(chosen, "PUBSUB_REDIS_ADDR/REDIS_URL")
	}
	if len(c.SentinelAddrs) > 0 || c.SentinelMaster != "" {
		chosen = append(chosen, "REDIS_SENTINEL_ADDRS/REDIS_SENTINEL_MASTER")
	}
	if len(c.ClusterAddrs) > 0 {
		chosen = append(chosen, "REDIS_CLUSTER_ADDRS")
	}
	switch {
	case len(chosen) > 1:
		return RedisTopology{}, fmt.Errorf("redis: %s are set: configure one of %s", strings.Join(chosen, " and "), topologyNames)
	case c.SentinelPassword != "" && len(c.SentinelAddrs) == 0:
		return RedisTopology{}, errors.New("REDIS_SENTINEL_PASSWORD is set without REDIS_SENTINEL_ADDRS")
	case len(c.SentinelAddrs) > 0 || c.SentinelMaster != "":
		o, err := c.sentinelOptions()
		return RedisTopology{Sentinel: o}, err
	case len(c.ClusterAddrs) > 0:
		o, err := c.clusterOptions()
		return RedisTopology{Cluster: o}, err
	}
	o, err := c.Options()
	return RedisTopology{Single: o}, err
}

func (c RedisConfig) sentinelOptions() (*redis.FailoverOptions, error) {
	switch {
	case len(c.SentinelAddrs) == 0:
		return nil, errors.New("REDIS_SENTINEL_MASTER: needs REDIS_SENTINEL_ADDRS, the sentinels to ask for the master")
	case c.SentinelMaster == "":
		return nil, errors.New("REDIS_SENTINEL_ADDRS: needs REDIS_SENTINEL_MASTER, the name the sentinels monitor the master under")
	}
	addrs, err := checkAddrs("REDIS_SENTINEL_ADDRS", c.SentinelAddrs, defaultSentinelPort)
	if err != nil {
		return nil, err
	}
	if err := c.checkCredentials(); err != nil {
		return nil, err
	}
	return &redis.FailoverOptions{
		MasterName:       c.SentinelMaster,
		SentinelAddrs:    addrs,
		SentinelPassword: c.SentinelPassword,
		Username:         c.Username,
		Password:         c.Password,
	}, nil
}

func (c RedisConfig) clusterOptions() (*redis.ClusterOptions, error) {
	addrs, err := checkAddrs("REDIS_CLUSTER_ADDRS", c.ClusterAddrs, defaultClusterPort)
	if err != nil {
		return nil, err
	}
	if err := c.checkCredentials(); err != nil {
		return nil, err
	}
	return &redis.ClusterOptions{Addrs: addrs, Username: c.Username, Password: c.Password}, nil
}

// checkCredentials: an ACL user needs its password (go-redis would send
// AUTH with an empty one).
func (c RedisConfig) checkCredentials() error {
	if c.Username != "" && c.Password == "" {
		return errors.New("REDIS_USERNAME: needs REDIS_PASSWORD")
	}
	return nil
}

// checkAddrs validates every host:port of the setting name.
func checkAddrs(name string, addrs []string, defaultPort string) ([]string, error) {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		addr, err := checkAddrPort(a, defaultPort)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, addr)
	}
	return out, nil
}

// String describes the topology for logs: the addresses, never a password.
func (t RedisTopology) String() string {
	switch {
	case t.Sentinel != nil:
		return fmt.Sprintf("sentinel master %s via %s", t.Sentinel.MasterName, strings.Join(t.Sentinel.SentinelAddrs, ","))
	case t.Cluster != nil:
		return "cluster " + strings.Join(t.Cluster.Addrs, ",")
	case t.Single != nil:
		return t.Single.Addr
	}
	return "none"
}

// dialHook is the dial hook of the topology's clients (newDialHook).
func (t RedisTopology) dialHook() dialHook {
	switch {
	case t.Sentinel != nil:
		return newDialHook(t.Sentinel.TLSConfig, t.Sentinel.Dialer)
	case t.Cluster != nil:
		return newDialHook(t.Cluster.TLSConfig, t.Cluster.Dialer)
	}
	return newDialHook(t.Single.TLSConfig, t.Single.Dialer)
}

// newClient returns the client of t with the broker's defaults (see
// NewRedis), and the ClusterClient again when t is a Cluster. t's options
// are copied, not changed.
func (t RedisTopology) newClient() (redis.UniversalClient, *redis.ClusterClient, error) {
	n := 0
	for _, set := range []bool{t.Single != nil, t.Sentinel != nil, t.Cluster != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, nil, fmt.Errorf("broker: a redis topology needs exactly one of Single, Sentinel and Cluster, got %d", n)
	}
	switch {
	case t.Sentinel != nil:
		o := *t.Sentinel
		o.ContextTimeoutEnabled = true
		o.DialerRetries = cmp.Or(o.DialerRetries, 1)
		return redis.NewFailoverClient(&o), nil, nil
	case t.Cluster != nil:
		o := *t.Cluster
		o.ContextTimeoutEnabled = true
		o.DialerRetries = cmp.Or(o.DialerRetries, 1)
		c := redis.NewClusterClient(&o)
		return c, c, nil
	}
	o := *t.Single
	o.ContextTimeoutEnabled = true
	o.DialerRetries = cmp.Or(o.DialerRetries, 1)
	return redis.NewClient(&o), nil, nil
}

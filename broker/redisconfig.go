package broker

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/flagext"
)

// RedisConfig selects Redis: one server (Addr or URL), a master found
// through Sentinel, or a Redis Cluster (RedisTopology). With none set the
// node runs on the in-memory broker.
type RedisConfig struct {
	Addr string // PUBSUB_REDIS_ADDR: host:port
	URL  string // REDIS_URL: redis:// or rediss:// with password, db, TLS; wins over Addr

	SentinelAddrs    flagext.StringSlice // REDIS_SENTINEL_ADDRS: the sentinels, host:port
	SentinelMaster   string              // REDIS_SENTINEL_MASTER: the name they monitor the master under
	SentinelPassword string              // REDIS_SENTINEL_PASSWORD: the sentinels' own requirepass
	ClusterAddrs     flagext.StringSlice // REDIS_CLUSTER_ADDRS: seed nodes of a Redis Cluster, host:port

	// The data nodes' credentials, for the topologies without a URL.
	Username string // REDIS_USERNAME: ACL user (needs Password)
	Password string // REDIS_PASSWORD
}

// RegisterFlags registers the Redis flags on fs (--pubsub-redis-addr,
// --redis-url, --redis-sentinel-*, --redis-cluster-addrs, --redis-username,
// --redis-password).
func (c *RedisConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "pubsub-redis-addr", "", "Redis host:port; with no Redis setting at all the node runs on the embedded in-memory broker")
	fs.StringVar(&c.URL, "redis-url", "", "Redis URL redis://[user:password@]host:port[/db], rediss:// for TLS; wins over PUBSUB_REDIS_ADDR")
	fs.Var(&c.SentinelAddrs, "redis-sentinel-addrs", "comma-separated host:port of Redis Sentinels (port 26379 when left out): the node uses the master they know as REDIS_SENTINEL_MASTER and follows its failovers")
	fs.StringVar(&c.SentinelMaster, "redis-sentinel-master", "", "the master name the sentinels of REDIS_SENTINEL_ADDRS monitor (sentinel monitor <name> ...)")
	fs.StringVar(&c.SentinelPassword, "redis-sentinel-password", "", "password of the sentinels themselves (their requirepass); REDIS_PASSWORD is the data nodes'")
	fs.Var(&c.ClusterAddrs, "redis-cluster-addrs", "comma-separated host:port seeds of a Redis Cluster (port 6379 when left out); the node finds the other nodes itself")
	fs.StringVar(&c.Username, "redis-username", "", "ACL user on the Redis data nodes (with REDIS_PASSWORD); with REDIS_URL, put it in the URL")
	fs.StringVar(&c.Password, "redis-password", "", "password of the Redis data nodes; with REDIS_URL, put it in the URL")
}

// Enabled tells whether Redis is configured, in any topology (Topology
// says whether the configuration is complete).
func (c RedisConfig) Enabled() bool {
	return c.URL != "" || c.Addr != "" || len(c.SentinelAddrs) > 0 || c.SentinelMaster != "" || len(c.ClusterAddrs) > 0
}

// defaultRedisPort is used when PUBSUB_REDIS_ADDR names a host only.
const defaultRedisPort = "6379"

// Options parses and checks the single-server settings (PUBSUB_REDIS_ADDR,
// REDIS_URL, REDIS_USERNAME, REDIS_PASSWORD) into go-redis options; Topology
// covers every topology. Errors name the setting by its environment name and
// never contain the password. NewRedis adds the broker's own defaults.
func (c RedisConfig) Options() (*redis.Options, error) {
	var opts *redis.Options
	switch {
	case c.URL != "":
		u, err := url.Parse(c.URL)
		if err != nil {
			// url.Error repeats the whole URL, password included: keep only the cause.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("REDIS_URL: invalid URL: %v", err)
		}
		switch u.Scheme {
		case "redis", "rediss", "unix":
		default:
			return nil, fmt.Errorf("REDIS_URL: scheme %q not supported: want redis://, rediss:// or unix://", u.Scheme)
		}
		if u.Scheme != "unix" && u.Opaque != "" {
			return nil, errors.New("REDIS_URL: invalid URL: want redis://host:port or rediss://host:port")
		}
		opts, err = redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
	case c.Addr != "":
		addr, err := checkAddr(c.Addr)
		if err != nil {
			return nil, fmt.Errorf("PUBSUB_REDIS_ADDR: %w", err)
		}
		opts = &redis.Options{Addr: addr}
	default:
		return nil, errors.New("redis: neither REDIS_URL nor PUBSUB_REDIS_ADDR is set")
	}
	if err := c.checkCredentials(); err != nil {
		return nil, err
	}
	if c.Password != "" {
		if opts.Username != "" || opts.Password != "" {
			return nil, errors.New("REDIS_PASSWORD: REDIS_URL carries credentials too: set them in one place")
		}
		opts.Username, opts.Password = c.Username, c.Password
	}
	return opts, nil
}

// checkAddr validates host:port; a missing port means the Redis default.
func checkAddr(addr string) (string, error) { return checkAddrPort(addr, defaultRedisPort) }

// checkAddrPort validates host:port; a missing port means defaultPort.
func checkAddrPort(addr, defaultPort string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			host, port = addr, defaultPort
		} else {
			return "", fmt.Errorf("want host:port, got %q", addr)
		}
	}
	if host == "" {
		return "", fmt.Errorf("want host:port, got %q: host is empty", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("want host:port, got %q: bad port", addr)
	}
	return net.JoinHostPort(host, port), nil
}

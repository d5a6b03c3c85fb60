package broker

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// RedisConfig selects the Redis server. With neither field set the node runs
// on the in-memory broker.
type RedisConfig struct {
	Addr string // PUBSUB_REDIS_ADDR: host:port
	URL  string // REDIS_URL: redis:// or rediss:// with password, db, TLS; wins over Addr
}

// RegisterFlags registers --pubsub-redis-addr and --redis-url on fs.
func (c *RedisConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "pubsub-redis-addr", "", "Redis host:port; with neither this nor a Redis URL the node runs on the embedded in-memory broker")
	fs.StringVar(&c.URL, "redis-url", "", "Redis URL redis://[user:password@]host:port[/db], rediss:// for TLS; wins over PUBSUB_REDIS_ADDR")
}

// Enabled tells whether a Redis server is configured.
func (c RedisConfig) Enabled() bool { return c.URL != "" || c.Addr != "" }

// defaultRedisPort is used when PUBSUB_REDIS_ADDR names a host only.
const defaultRedisPort = "6379"

// Options parses and checks the configuration into go-redis options. Errors
// name the setting by its environment name and never contain the password.
// NewRedis adds the broker's own defaults.
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
	return opts, nil
}

// checkAddr validates host:port; a missing port means the Redis default.
func checkAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			host, port = addr, defaultRedisPort
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

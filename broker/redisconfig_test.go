package broker

import (
	"flag"
	"strings"
	"testing"
)

func TestRedisConfigFlags(t *testing.T) {
	var c RedisConfig
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	for _, name := range []string{"pubsub-redis-addr", "redis-url"} {
		f := fs.Lookup(name)
		if f == nil || f.DefValue != "" {
			t.Fatalf("flag %s = %+v, want registered with default \"\"", name, f)
		}
	}
	if c.Enabled() {
		t.Fatal("Enabled() with nothing set")
	}
	if err := fs.Parse([]string{"--pubsub-redis-addr", "redis:6379", "--redis-url", "redis://h:1/2"}); err != nil {
		t.Fatal(err)
	}
	if c.Addr != "redis:6379" || c.URL != "redis://h:1/2" || !c.Enabled() {
		t.Fatalf("parsed %+v", c)
	}
}

func TestRedisConfigOptions(t *testing.T) {
	tests := []struct {
		name     string
		cfg      RedisConfig
		addr     string
		password string
		db       int
		tls      bool
		err      string // substring of the error; "" = success
	}{
		{name: "addr", cfg: RedisConfig{Addr: "redis.local:6380"}, addr: "redis.local:6380"},
		{name: "addr without port", cfg: RedisConfig{Addr: "redis.local"}, addr: "redis.local:6379"},
		{name: "ipv6 addr", cfg: RedisConfig{Addr: "[::1]:7000"}, addr: "[::1]:7000"},
		{name: "addr bad port", cfg: RedisConfig{Addr: "h:99999"}, err: "PUBSUB_REDIS_ADDR"},
		{name: "addr port not a number", cfg: RedisConfig{Addr: "h:abc"}, err: "PUBSUB_REDIS_ADDR"},
		{name: "addr empty host", cfg: RedisConfig{Addr: ":6379"}, err: "PUBSUB_REDIS_ADDR"},
		{name: "addr garbage", cfg: RedisConfig{Addr: "a:b:c"}, err: "PUBSUB_REDIS_ADDR"},
		{name: "url", cfg: RedisConfig{URL: "redis://:s3cret@cache:6390/3"}, addr: "cache:6390", password: "s3cret", db: 3},
		{name: "url default port", cfg: RedisConfig{URL: "redis://cache"}, addr: "cache:6379"},
		{name: "url tls", cfg: RedisConfig{URL: "rediss://user:pw@cache:6390"}, addr: "cache:6390", password: "pw", tls: true},
		{name: "url wins over addr", cfg: RedisConfig{Addr: "other:1", URL: "redis://cache:2"}, addr: "cache:2"},
		{name: "url bad scheme", cfg: RedisConfig{URL: "http://cache:6379"}, err: "REDIS_URL"},
		{name: "url without scheme", cfg: RedisConfig{URL: "cache:6379"}, err: "REDIS_URL"},
		{name: "url opaque", cfg: RedisConfig{URL: "redis:cache:6379"}, err: "REDIS_URL"},
		{name: "url bad db", cfg: RedisConfig{URL: "redis://:pw@cache:6379/x"}, err: "REDIS_URL"},
		{name: "url unparsable keeps the password out", cfg: RedisConfig{URL: "redis://:s3cret@cache:port/0"}, err: "REDIS_URL"},
		{name: "nothing set", cfg: RedisConfig{}, err: "REDIS_URL nor PUBSUB_REDIS_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.cfg.Options()
			if tt.err != "" {
				if err == nil {
					t.Fatalf("Options() = %+v, want an error", o)
				}
				if !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %q does not name %s", err, tt.err)
				}
				for _, secret := range []string{"s3cret", "pw@"} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("error %q leaks the password", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Options(): %v", err)
			}
			if o.Addr != tt.addr || o.Password != tt.password || o.DB != tt.db || (o.TLSConfig != nil) != tt.tls {
				t.Fatalf("Options() = addr %q password %q db %d tls %v; want %q %q %d %v",
					o.Addr, o.Password, o.DB, o.TLSConfig != nil, tt.addr, tt.password, tt.db, tt.tls)
			}
		})
	}
}

package broker

import (
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestRedisTopologyFlags(t *testing.T) {
	var c RedisConfig
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := fs.Parse([]string{
		"--redis-sentinel-addrs", "s1:26379, s2", "--redis-sentinel-master", "mymaster",
		"--redis-sentinel-password", "sp", "--redis-cluster-addrs", "c1,c2:7000",
		"--redis-username", "u", "--redis-password", "p",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := RedisConfig{
		SentinelAddrs: []string{"s1:26379", "s2"}, SentinelMaster: "mymaster", SentinelPassword: "sp",
		ClusterAddrs: []string{"c1", "c2:7000"}, Username: "u", Password: "p",
	}
	if !slices.Equal(c.SentinelAddrs, want.SentinelAddrs) || !slices.Equal(c.ClusterAddrs, want.ClusterAddrs) ||
		c.SentinelMaster != want.SentinelMaster || c.SentinelPassword != want.SentinelPassword ||
		c.Username != want.Username || c.Password != want.Password {
		t.Fatalf("parsed %+v, want %+v", c, want)
	}
}

func TestRedisConfigTopology(t *testing.T) {
	tests := []struct {
		name    string
		cfg     RedisConfig
		enabled bool
		want    string // RedisTopology.String() on success
		err     []string
	}{
		{name: "nothing", cfg: RedisConfig{}},
		{name: "single", cfg: RedisConfig{Addr: "h"}, enabled: true, want: "h:6379"},
		{name: "single with credentials", cfg: RedisConfig{Addr: "h:1", Username: "u", Password: "p"}, enabled: true, want: "h:1"},
		{name: "url and addr", cfg: RedisConfig{Addr: "a:1", URL: "redis://b:2"}, enabled: true, want: "b:2"},
		{name: "url with password and REDIS_PASSWORD", cfg: RedisConfig{URL: "redis://:s3cret@b:2", Password: "pw"}, enabled: true, err: []string{"REDIS_PASSWORD", "REDIS_URL"}},
		{name: "sentinel", cfg: RedisConfig{SentinelAddrs: []string{"s1", "s2:5000"}, SentinelMaster: "m"}, enabled: true, want: "sentinel master m via s1:26379,s2:5000"},
		{name: "sentinel without master", cfg: RedisConfig{SentinelAddrs: []string{"s1"}}, enabled: true, err: []string{"REDIS_SENTINEL_MASTER"}},
		{name: "master without sentinels", cfg: RedisConfig{SentinelMaster: "m"}, enabled: true, err: []string{"REDIS_SENTINEL_ADDRS"}},
		{name: "sentinel bad addr", cfg: RedisConfig{SentinelAddrs: []string{"s1:x"}, SentinelMaster: "m"}, enabled: true, err: []string{"REDIS_SENTINEL_ADDRS", "s1:x"}},
		{name: "sentinel password alone", cfg: RedisConfig{Addr: "h", SentinelPassword: "s3cret"}, enabled: true, err: []string{"REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_ADDRS"}},
		{name: "cluster", cfg: RedisConfig{ClusterAddrs: []string{"c1", "[::1]:7000"}}, enabled: true, want: "cluster c1:6379,[::1]:7000"},
		{name: "cluster bad addr", cfg: RedisConfig{ClusterAddrs: []string{"c1:99999"}}, enabled: true, err: []string{"REDIS_CLUSTER_ADDRS"}},
		{name: "cluster and single", cfg: RedisConfig{Addr: "h", ClusterAddrs: []string{"c1"}}, enabled: true, err: []string{"PUBSUB_REDIS_ADDR", "REDIS_CLUSTER_ADDRS", "configure one"}},
		{name: "cluster and sentinel", cfg: RedisConfig{SentinelAddrs: []string{"s"}, SentinelMaster: "m", ClusterAddrs: []string{"c1"}}, enabled: true, err: []string{"REDIS_SENTINEL_ADDRS", "REDIS_CLUSTER_ADDRS"}},
		{name: "username without password", cfg: RedisConfig{ClusterAddrs: []string{"c1"}, Username: "u"}, enabled: true, err: []string{"REDIS_USERNAME", "REDIS_PASSWORD"}},
		{name: "password without redis", cfg: RedisConfig{Password: "s3cret"}, err: []string{"REDIS_PASSWORD", "REDIS_CLUSTER_ADDRS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cfg.Enabled(); got != tt.enabled {
				t.Fatalf("Enabled() = %v, want %v", got, tt.enabled)
			}
			err := tt.cfg.Validate()
			if len(tt.err) > 0 {
				checkConfigError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatalf("Validate(): %v", err)
			}
			if !tt.enabled {
				return
			}
			top, err := tt.cfg.Topology()
			if err != nil {
				t.Fatalf("Topology(): %v", err)
			}
			if top.String() != tt.want {
				t.Fatalf("Topology() = %s, want %s", top, tt.want)
			}
		})
	}
}

// checkConfigError: err names every one of names and no password.
func checkConfigError(t *testing.T, err error, names []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one naming %v", names)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %q leaks a password", err)
	}
}

func TestRedisTopologyOptions(t *testing.T) {
	top, err := RedisConfig{SentinelAddrs: []string{"s"}, SentinelMaster: "m", SentinelPassword: "sp", Username: "u", Password: "p"}.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if o := top.Sentinel; o == nil || o.MasterName != "m" || o.SentinelPassword != "sp" || o.Username != "u" || o.Password != "p" {
		t.Fatalf("sentinel options %+v", top.Sentinel)
	}
	top, err = RedisConfig{ClusterAddrs: []string{"c"}, Password: "p"}.Topology()
	if err != nil {
		t.Fatal(err)
	}
	if o := top.Cluster; o == nil || o.Password != "p" || !slices.Equal(o.Addrs, []string{"c:6379"}) {
		t.Fatalf("cluster options %+v", top.Cluster)
	}
	// A topology with none or two of its fields set is refused.
	if _, err := NewRedisTopology(RedisTopology{}, RedisOptions{}); err == nil {
		t.Fatal("NewRedisTopology with no topology succeeded")
	}
	single, _ := RedisConfig{Addr: "h"}.Options()
	if _, err := NewRedisTopology(RedisTopology{Single: single, Cluster: top.Cluster}, RedisOptions{}); err == nil {
		t.Fatal("NewRedisTopology with two topologies succeeded")
	}
}

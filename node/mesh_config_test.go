package node

import (
	"strings"
	"testing"
)

// TestBrokerSetting: NOTIFY_BROKER's default follows Redis and
// NOTIFY_JOIN, and the combinations a broker cannot serve are refused with
// what to change.
func TestBrokerSetting(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(c *Config)
		wantKind string
		wantErr  string // "" = valid
	}{
		{"no Redis, no join", func(c *Config) {}, brokerMemory, ""},
		{"Redis", func(c *Config) { c.Redis.Addr = "localhost:6379" }, brokerRedis, ""},
		{"join without Redis needs history off", func(c *Config) { c.Join = []string{"seed:7946"} }, brokerCluster,
			"NOTIFY_BROKER=cluster (the default: NOTIFY_JOIN is set and no Redis is configured) keeps no history yet: set NOTIFY_HISTORY_SIZE=0"},
		{"join without Redis, history off", func(c *Config) { c.Join = []string{"seed:7946"}; c.History.Size = 0 }, brokerCluster, ""},
		{"cluster needs a secret", func(c *Config) { c.Broker = brokerCluster; c.History.Size = 0; c.ClusterSecret = "" }, brokerCluster,
			"NOTIFY_BROKER=cluster needs NOTIFY_CLUSTER_SECRET"},
		{"cluster with the gossip key", func(c *Config) {
			c.Broker, c.History.Size, c.ClusterSecret = brokerCluster, 0, ""
			c.GossipKey = "MDEyMzQ1Njc4OWFiY2RlZg=="
		}, brokerCluster, ""},
		{"cluster with Redis", func(c *Config) { c.Broker = brokerCluster; c.History.Size = 0; c.Redis.Addr = "localhost:6379" }, brokerCluster,
			`invalid NOTIFY_BROKER "cluster": runs without Redis, but a Redis is configured`},
		{"memory with join", func(c *Config) { c.Broker = brokerMemory; c.Join = []string{"seed:7946"} }, brokerMemory, ""},
		{"memory with Redis", func(c *Config) { c.Broker = brokerMemory; c.Redis.URL = "redis://localhost" }, brokerMemory, "runs without Redis"},
		{"redis without Redis", func(c *Config) { c.Broker = brokerRedis }, brokerRedis, `invalid NOTIFY_BROKER "redis": needs a Redis`},
		{"unknown", func(c *Config) { c.Broker = "kafka" }, "kafka", `invalid NOTIFY_BROKER "kafka": want "redis", "cluster" or "memory"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.NodeName = "n"
			c.ClusterSecret = testClusterSecret
			tt.mutate(&c)
			if got := c.brokerKind(); got != tt.wantKind {
				t.Errorf("kind %q, want %q", got, tt.wantKind)
			}
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate: %v, want %q", err, tt.wantErr)
			}
		})
	}
}

package main

import (
	"maps"
	"slices"
	"testing"
)

func TestReadLegacy(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		mapped  map[string]string
		ignored []string
	}{
		{name: "none", env: map[string]string{"PATH": "/bin"}, mapped: map[string]string{}},
		{name: "REDIS_HOST alone", env: map[string]string{"REDIS_HOST": "redis"},
			mapped: map[string]string{"PUBSUB_REDIS_ADDR": "redis:6379"}},
		{name: "REDIS_HOST and REDIS_PORT", env: map[string]string{"REDIS_HOST": "10.0.0.5", "REDIS_PORT": "6380"},
			mapped: map[string]string{"PUBSUB_REDIS_ADDR": "10.0.0.5:6380"}},
		{name: "IPv6 REDIS_HOST", env: map[string]string{"REDIS_HOST": "::1"},
			mapped: map[string]string{"PUBSUB_REDIS_ADDR": "[::1]:6379"}},
		{name: "ours wins", env: map[string]string{"REDIS_HOST": "old", "PUBSUB_REDIS_ADDR": "new:6379"}, mapped: map[string]string{}},
		{name: "REDIS_URL wins", env: map[string]string{"REDIS_HOST": "old", "REDIS_URL": "redis://new:6379"}, mapped: map[string]string{}},
		{name: "Sentinel wins", env: map[string]string{"REDIS_HOST": "old", "REDIS_SENTINEL_ADDRS": "s:26379"}, mapped: map[string]string{}},
		{name: "Cluster wins", env: map[string]string{"REDIS_HOST": "old", "REDIS_CLUSTER_ADDRS": "c:6379"}, mapped: map[string]string{}},
		{name: "REDIS_PORT alone", env: map[string]string{"REDIS_PORT": "6380"}, mapped: map[string]string{}, ignored: []string{"REDIS_PORT"}},
		{name: "DNS_CLUSTER_QUERY", env: map[string]string{"DNS_CLUSTER_QUERY": "notify-headless.default.svc.cluster.local"},
			mapped: map[string]string{"NOTIFY_JOIN": "dns+notify-headless.default.svc.cluster.local:7946"}},
		{name: "NOTIFY_JOIN wins", env: map[string]string{"DNS_CLUSTER_QUERY": "a", "NOTIFY_JOIN": "b:7946"}, mapped: map[string]string{}},
		{name: "SECRET_KEY_BASE", env: map[string]string{"SECRET_KEY_BASE": "kb"},
			mapped: map[string]string{"NOTIFY_PHOENIX_SECRET_KEY_BASE": "kb"}},
		{name: "ignored", env: map[string]string{"ENVIRONMENT": "prod", "ELASTIC_APM_SERVICE_NAME": "x", "ELASTIC_APM_SERVER_URL": "y", "PHX_HOST": "h", "ENVIRONMENTAL": "no"},
			mapped: map[string]string{}, ignored: []string{"ELASTIC_APM_SERVER_URL", "ELASTIC_APM_SERVICE_NAME", "ENVIRONMENT", "PHX_HOST"}},
		{name: "blank values", env: map[string]string{"REDIS_HOST": " ", "DNS_CLUSTER_QUERY": ""}, mapped: map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var environ []string
			for k, v := range tt.env {
				environ = append(environ, k+"="+v)
			}
			l := readLegacy(environ, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if !maps.Equal(l.mapped, tt.mapped) || !slices.Equal(l.ignored, tt.ignored) {
				t.Fatalf("mapped %v ignored %v, want %v %v", l.mapped, l.ignored, tt.mapped, tt.ignored)
			}
			lookup := l.lookup(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			for k, v := range tt.mapped {
				if got, ok := lookup(k); !ok || got != v {
					t.Errorf("lookup(%s) = %q, %v", k, got, ok)
				}
			}
		})
	}
}

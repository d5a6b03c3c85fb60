package node

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/leakcheck"
)

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the Redis-down tests would drown the
	// output. The broker logs what matters through slog.
	redis.SetLogger(quietRedis{})
	// Every node the tests started was shut down: nothing of theirs may
	// still run (memberlist's probes in flight and go-redis's dial prober
	// end by themselves within a few seconds). The tests' own HTTP clients
	// keep idle connections: they are closed as the tests end.
	leakcheck.Main(&closeIdle{m}, 5*time.Second)
}

// closeIdle runs the tests, then closes the default HTTP client's idle
// connections (their goroutines are the tests', not the node's).
type closeIdle struct{ m *testing.M }

func (c *closeIdle) Run() int {
	code := c.m.Run()
	http.DefaultClient.CloseIdleConnections()
	return code
}

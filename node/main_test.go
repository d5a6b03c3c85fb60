package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the Redis-down tests would drown the
	// output. The broker logs what matters through slog.
	redis.SetLogger(quietRedis{})
	code := m.Run()
	if code == 0 {
		// Every node the tests started was shut down: nothing of theirs may
		// still run. The tests' own HTTP clients keep idle connections.
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

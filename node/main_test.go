package node

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the Redis-down tests would drown the
	// output. The broker logs what matters through slog.
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}

package broker

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// BenchmarkUserModeSubscribe: the cost of one channel of
// NOTIFY_SUBSCRIBE_MODE=user, from Want to Redis's confirmation: time,
// the node's heap and Redis's used_memory per subscribed channel.
func BenchmarkUserModeSubscribe(b *testing.B) {
	s := redistest.Start(b)
	r := newUserRedis(b, s.Addr, 0)
	runWith(b, r, nopHandler{})
	await.True(b, "Ready() == nil", func() bool { return r.Ready() == nil })
	c := s.Client(b)
	ctx := context.Background()
	usedMemory := func() float64 {
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			b.Fatal(err)
		}
		for line := range strings.SplitSeq(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseFloat(v, 64)
				return n
			}
		}
		b.Fatal("no used_memory in INFO memory")
		return 0
	}
	targets := make([]Target, b.N)
	for i := range targets {
		targets[i] = Target{Name: fmt.Sprintf("bench-user-%07d", i)}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	redisBefore := usedMemory()
	b.ResetTimer()
	for _, t := range targets {
		r.Want(t)
	}
	if err := r.Await(ctx, targets...); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric((usedMemory()-redisBefore)/float64(b.N), "redis_B/channel")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "node_B/channel")
	runtime.KeepAlive(targets)
}

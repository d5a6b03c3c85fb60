package broker

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// stateReads batches the state reads (HGETALL) of concurrent handshakes
// into pipelines: a ramp of thousands of handshakes a second made one round
// trip each, and go-redis's per-command work (a pooled connection and its
// health check, a write, a read) was about a sixth of a handshake's CPU.
// Reads queue while a pipeline is out; a drainer goroutine, started by the
// first read and ending when the queue is empty, sends what queued as the
// next pipeline. A lone read still goes alone, one goroutine hand-off later.
type stateReads struct {
	client redis.Cmdable

	mu      sync.Mutex
	queue   []*stateRead
	running bool
	wg      sync.WaitGroup // the drainer
}

// stateRead is one queued read; done is closed once m and err are set.
type stateRead struct {
	key  string
	m    map[string]string
	err  error
	done chan struct{}
}

// maxStateBatch bounds a pipeline: its replies are held at once.
const maxStateBatch = 256

// stateBatchTimeout bounds a pipeline; each reader waits only as long as
// its own context allows.
const stateBatchTimeout = 10 * time.Second

// get reads the hash at key through the next pipeline.
func (s *stateReads) get(ctx context.Context, key string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // as go-redis: nothing is sent for an ended context
	}
	req := &stateRead{key: key, done: make(chan struct{})}
	s.mu.Lock()
	s.queue = append(s.queue, req)
	if !s.running {
		s.running = true
		s.wg.Add(1)
		go s.drain()
	}
	s.mu.Unlock()
	select {
	case <-req.done:
		return req.m, req.err
	case <-ctx.Done():
		return nil, ctx.Err() // the pipeline goes on; its answer is dropped
	}
}

// drain sends what is queued, a pipeline at a time, until the queue is
// empty.
func (s *stateReads) drain() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		batch := s.queue
		if len(batch) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		if len(batch) > maxStateBatch {
			batch, s.queue = batch[:maxStateBatch], batch[maxStateBatch:]
		} else {
			s.queue = nil
		}
		s.mu.Unlock()
		s.exec(batch)
	}
}

func (s *stateReads) exec(batch []*stateRead) {
	ctx, cancel := context.WithTimeout(context.Background(), stateBatchTimeout)
	defer cancel()
	if len(batch) == 1 {
		req := batch[0]
		req.m, req.err = s.client.HGetAll(ctx, req.key).Result()
		close(req.done)
		return
	}
	cmds := make([]*redis.MapStringStringCmd, len(batch))
	pipe := s.client.Pipeline()
	for i, req := range batch {
		cmds[i] = pipe.HGetAll(ctx, req.key)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, req := range batch {
		req.m, req.err = cmds[i].Result()
		close(req.done)
	}
}

// wait returns once the drainer, if any, has ended.
func (s *stateReads) wait() { s.wg.Wait() }

package service

import (
	"context"
	"sync"
	"time"
)

// Tasks are short-lived goroutines a service starts on demand (a state read
// for a join, a paced close), bound to the service's life: Stop cancels
// their context and waits for every one of them. The zero value is not
// usable; use NewTasks.
type Tasks struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// NewTasks returns a set of tasks that accepts work until Stop.
func NewTasks() *Tasks {
	ctx, cancel := context.WithCancel(context.Background())
	return &Tasks{ctx: ctx, cancel: cancel}
}

// Go runs f in a goroutine with a context that ends at Stop. It reports
// false, running nothing, once Stop has begun.
func (t *Tasks) Go(f func(ctx context.Context)) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f(t.ctx)
	}()
	return true
}

// Stop cancels the running tasks, refuses new ones and waits for the
// running ones to return.
func (t *Tasks) Stop() {
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// Sleep waits d or until ctx ends; it reports whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Newest and Sync: what a node needs besides Read to resume a client
// without a gap or a duplicate between history and live messages. Read the
// history, then Sync: whatever was published before the Sync has reached
// the handler (and so the hub's held queue) once Sync returns.

// Newest returns t's newest cursor (zero when the stream is empty or
// absent), from one MULTI of two cheap reads.
func (r *Redis) Newest(ctx context.Context, t Target) (Cursor, error) {
	if !r.hist.cfg.Enabled() {
		return Cursor{}, fmt.Errorf("newest: %w", ErrHistoryOff)
	}
	ch, err := historyChannel(t)
	if err != nil {
		return Cursor{}, err
	}
	var epoch *redis.StringCmd
	var last *redis.XMessageSliceCmd
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		epoch = p.Get(ctx, "{"+ch+"}:epoch")
		last = p.XRevRangeN(ctx, "{"+ch+"}:history", "+", "-", 1)
		return nil
	})
	if err == nil || errors.Is(err, redis.Nil) {
		err = last.Err() // Exec names only the first failure: GET's redis.Nil
	}
	if err != nil {
		return Cursor{}, wrapErr("newest", err)
	}
	if epoch.Val() == "" || len(last.Val()) == 0 {
		return Cursor{}, nil
	}
	seq, err := entrySeq(last.Val()[0].ID)
	if err != nil {
		return Cursor{}, fmt.Errorf("newest of %s: %w", ch, err)
	}
	return Cursor{Epoch: epoch.Val(), Seq: seq}, nil
}

// syncPrefix starts a Sync marker published on the node's probe channel.
const syncPrefix = "sync:"

// errSyncLost: the subscription was lost while a Sync waited for its
// marker.
var errSyncLost = errors.New("broker: the subscription was lost during Sync")

// syncWaiters are the Syncs waiting for their marker to come back.
type syncWaiters struct {
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan error
}

// Sync returns once every message Redis received before the call has been
// handed to the running Run's handler (or was lost with the subscription):
// it publishes a marker on the node's probe channel and waits until the
// reader, which hands messages over in the order Redis sent them, reaches
// it. It fails when Run is not subscribed, when the subscription is lost
// meanwhile, and when ctx ends first.
func (r *Redis) Sync(ctx context.Context) error {
	if !r.running.Load() {
		return fmt.Errorf("sync: %w", errNotRunning)
	}
	w := &r.syncs
	done := make(chan error, 1)
	w.mu.Lock()
	w.next++
	n := w.next
	if w.waiting == nil {
		w.waiting = make(map[uint64]chan error)
	}
	w.waiting[n] = done
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.waiting, n)
		w.mu.Unlock()
	}()
	receivers, err := r.client.Publish(ctx, r.probeChannel, syncPrefix+strconv.FormatUint(n, 10)).Result()
	if err != nil {
		return wrapErr("sync", err)
	}
	if receivers == 0 {
		return fmt.Errorf("sync: %w: not subscribed", ErrUnavailable)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return wrapErr("sync", ctx.Err())
	}
}

// synced is called by the reader for the marker of Sync n: every Sync up
// to n is done. Markers may come back out of order (they are published on
// several pooled connections), yet marker n was published after Syncs
// 1..n-1 began, so whatever was published before those came first.
func (r *Redis) synced(payload string) {
	n, err := strconv.ParseUint(strings.TrimPrefix(payload, syncPrefix), 10, 64)
	if err != nil {
		return
	}
	r.syncs.release(func(k uint64) bool { return k <= n }, nil)
}

// release hands err to every waiter whose number passes which.
func (w *syncWaiters) release(which func(uint64) bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, done := range w.waiting {
		if which(k) {
			done <- err
			delete(w.waiting, k)
		}
	}
}

// syncLost fails every waiting Sync: its marker may never come back.
func (r *Redis) syncLost() {
	r.syncs.release(func(uint64) bool { return true }, errSyncLost)
}

// Newest returns t's newest cursor (zero when the stream is empty or
// absent).
func (m *Memory) Newest(ctx context.Context, t Target) (Cursor, error) {
	if err := ctx.Err(); err != nil {
		return Cursor{}, err
	}
	if !m.hist.cfg.Enabled() {
		return Cursor{}, fmt.Errorf("newest: %w", ErrHistoryOff)
	}
	ch, err := historyChannel(t)
	if err != nil {
		return Cursor{}, err
	}
	m.histMu.Lock()
	defer m.histMu.Unlock()
	s := m.hist.stream(ch, time.Now())
	if s == nil || len(s.ring) == 0 {
		return Cursor{}, nil
	}
	return Cursor{Epoch: s.epoch, Seq: s.seq}, nil
}

// Sync returns once every message published before the call has been
// handed to the running Run's handler: Publish and Append deliver before
// they return, so Sync only waits for a delivery in progress. It fails when
// no Run is running. Like Publish, it must not be called from the handler.
func (m *Memory) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.deliverMu.Lock()
	running := m.handler != nil
	m.deliverMu.Unlock()
	if !running {
		return fmt.Errorf("sync: %w", errNotRunning)
	}
	return nil
}

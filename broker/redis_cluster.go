package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// What a Redis Cluster needs beyond one server. The subscription is
// classic pub/sub on one node, which every node's PUBLISH reaches over the
// cluster bus, and the probe makes the round trip through it; but state,
// history and the publishes of applications go to the master of their
// key's slot, so readiness also asks every master, and the library is
// loaded on each of them.

// mastersCheck is the outcome of one check of every master.
type mastersCheck struct {
	at  time.Time
	err error // nil: every master answered
}

// masterLoop checks every master of the Cluster each probe interval until
// ctx ends, for Ready.
func (r *Redis) masterLoop(ctx context.Context) {
	r.masters.Store(nil)
	defer r.masters.Store(nil) // the next Run proves every master again
	t := time.NewTicker(r.interval)
	defer t.Stop()
	failing := false
	for {
		err := r.checkMasters(ctx)
		if ctx.Err() != nil {
			return
		}
		r.masters.Store(&mastersCheck{at: time.Now(), err: err})
		r.updateUp()
		switch {
		case err != nil && !failing:
			r.log.Warn("redis cluster: a master is unreachable or the cluster is down; not ready", "err", err)
		case err == nil && failing:
			r.log.Info("redis cluster: every master answers again, with cluster_state:ok")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkMasters asks every master the Cluster's slot map names (go-redis
// reads it afresh for each check) for CLUSTER INFO, within the probe's
// publish timeout: each must answer, and say cluster_state:ok. A master
// that answers PING may still refuse every key (CLUSTERDOWN) while the
// cluster misses a master; the probe, keyless, would not notice.
func (r *Redis) checkMasters(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.checkTimeout())
	defer cancel()
	return r.cluster.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		info, err := m.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("master %s: %w", m.Options().Addr, err)
		}
		if state := clusterState(info); state != "ok" {
			return fmt.Errorf("master %s: cluster_state:%s: the cluster refuses keys (CLUSTERDOWN)", m.Options().Addr, state)
		}
		return nil
	})
}

// clusterState reads cluster_state from CLUSTER INFO.
func clusterState(info string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "cluster_state:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "missing"
}

// checkTimeout bounds one probe publish or one check of the masters: short
// enough for the next probe interval, long enough for a loaded server.
func (r *Redis) checkTimeout() time.Duration {
	return min(r.timeout/2, max(r.interval, 250*time.Millisecond))
}

// mastersReady is nil unless Redis is a Cluster whose last check of the
// masters failed, or is missing or stale in this Run. A check ends within
// checkTimeout and the next starts an interval later, so a result older
// than twice the probe timeout means the loop is not running.
func (r *Redis) mastersReady(now time.Time) error {
	if r.cluster == nil {
		return nil
	}
	c := r.masters.Load()
	switch {
	case c == nil:
		return errors.New("redis cluster: the masters were not checked yet")
	case c.err != nil:
		return fmt.Errorf("redis cluster: %w", c.err)
	case now.Sub(c.at) > 2*r.timeout:
		return fmt.Errorf("redis cluster: the masters were last checked %s ago", now.Sub(c.at).Round(time.Millisecond))
	}
	return nil
}

// loadMasters loads the library on every master; it records the loads that
// succeeded and returns the first failure. The caller holds loadMu.
func (r *Redis) loadMasters(ctx context.Context, why string) error {
	var mu sync.Mutex
	var done []string
	err := r.cluster.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		addr := m.Options().Addr
		if err := m.FunctionLoadReplace(ctx, r.hist.library).Err(); err != nil {
			return fmt.Errorf("master %s: %w", addr, err)
		}
		mu.Lock()
		done = append(done, addr)
		mu.Unlock()
		return nil
	})
	for _, addr := range done {
		r.loaded(why, addr)
	}
	return err
}

// reloadMaster loads the library on the master of key's slot, unless it was
// loaded there since gen. The caller holds loadMu.
func (r *Redis) reloadMaster(ctx context.Context, key string, gen uint64) error {
	m, err := r.cluster.MasterForKey(ctx, key)
	if err != nil {
		return err
	}
	addr := m.Options().Addr
	if r.hist.masterGen[addr] > gen {
		return nil
	}
	if err := m.FunctionLoadReplace(ctx, r.hist.library).Err(); err != nil {
		return fmt.Errorf("master %s: %w", addr, err)
	}
	r.loaded("a call found it missing", addr)
	return nil
}

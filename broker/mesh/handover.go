package mesh

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/notify-dev/notify/ring"
)

// handOverWorkers bounds the hand-over calls in flight: enough to fill the
// links' batches, few enough to leave room for the calls of connecting
// clients.
const handOverWorkers = 32

// Leave hands the state of every user this node holds to the owner the
// other members' ring gives it, as this node leaves the cluster (after the
// cluster's Leave, so that the others route to the new owners already).
// What is written here afterwards is handed over again when Run ends. On
// the new owner, fields it already has win: they were written after it
// took over.
func (m *Mesh) Leave(ctx context.Context) {
	m.leaving.Store(true)
	r := m.ringWithoutSelf()
	if r == nil {
		if n := len(m.local.StateUsers()); n > 0 {
			m.log.Warn("leaving as the last member: the state of its users is lost", "users", n)
		}
		return
	}
	m.handOver(ctx, r)
}

// ringWithoutSelf is the ring of the other members, nil when there is none.
func (m *Mesh) ringWithoutSelf() *ring.Ring {
	cur := m.cfg.Ring.Ring()
	names := slices.DeleteFunc(cur.Members(), func(n string) bool { return n == m.cfg.NodeName })
	if len(names) == 0 {
		return nil
	}
	r, err := ring.New(cur.Config(), names)
	if err != nil {
		m.log.Error("cannot build the ring without this node", "err", err)
		return nil
	}
	return r
}

// mover hands state over whenever the ring changed (Run's loop says so),
// until ctx ends.
func (m *Mesh) mover(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.moves:
		}
		r := m.cfg.Ring.Ring()
		if m.leaving.Load() {
			if r = m.ringWithoutSelf(); r == nil {
				continue
			}
		}
		m.handOver(ctx, r)
	}
}

// handOver gives the state of each local user that r places on another
// member to that member (merged there under what it has), and drops here
// the fields that were handed, unless they changed meanwhile. A user whose
// owner cannot be reached keeps its state here until the next try.
func (m *Mesh) handOver(ctx context.Context, r *ring.Ring) {
	type move struct{ user, owner string }
	work := make(chan move)
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for range handOverWorkers {
		wg.Go(func() {
			for mv := range work {
				if m.handOne(ctx, mv.user, mv.owner) {
					sent.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	for _, u := range m.local.StateUsers() {
		if o := r.Locate(u); o != "" && o != m.cfg.NodeName {
			select {
			case work <- move{u, o}:
			case <-ctx.Done():
			}
		}
	}
	close(work)
	wg.Wait()
	m.metrics.handedOver.Add(float64(sent.Load()))
	m.metrics.handOverFailed.Add(float64(failed.Load()))
	if sent.Load() > 0 || failed.Load() > 0 {
		m.log.Info("state handed to the users' new owners", "users", sent.Load(), "failed", failed.Load())
	}
}

func (m *Mesh) handOne(ctx context.Context, user, owner string) bool {
	if ctx.Err() != nil {
		return false
	}
	fields, err := m.local.GetState(ctx, user)
	if err != nil || len(fields) == 0 {
		return err == nil
	}
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	l, err := m.linkTo(owner)
	if err == nil {
		_, err = l.do(cctx, opMerge, user, fields)
	}
	if err != nil {
		m.log.Debug("state hand-over failed", "user", user, "owner", owner, "err", err)
		return false
	}
	m.local.DropState(user, fields)
	return true
}

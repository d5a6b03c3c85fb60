package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/internal/service"
)

// Sharded pub/sub (SubscribeSharded): a node SSUBSCRIBEs each channel it
// serves on the master of the channel's slot, over one pub/sub connection
// per master (a shard). go-redis's ClusterClient.SSubscribe listens on the
// first channel's shard only (go-redis #3133), so the broker keeps the
// slot map itself: it reads CLUSTER SHARDS every probe interval, and at
// once when a master says a slot left it (an SSUBSCRIBE answered MOVED,
// or a SUNSUBSCRIBE Redis sent by itself, which is how a master drops the
// shard channels of a slot migrated away or of a master demoted to
// replica). Each channel then moves to the interest of its new master.
//
// What a master publishes between dropping a channel and the SSUBSCRIBE on
// its new master is lost to the subscription, as Redis itself drops it;
// history (cursors, resume) is what recovers it. Control messages and the
// node's probe stay classic pub/sub on the main subscription.

// serialHandler calls h one call at a time: the shards' readers and the
// main subscription's share it.
type serialHandler struct {
	mu sync.Mutex
	h  Handler
}

var _ Handler = (*serialHandler)(nil)

func (s *serialHandler) Deliver(t Target, m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h.Deliver(t, m)
}

func (s *serialHandler) Control(payload string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h.Control(payload)
}

func (s *serialHandler) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	flush(s.h)
}

// shardRouter routes each channel to the shard of its slot's master.
// Its lock is a leaf but for the interests' locks, taken under it: Want
// and Unwant are called under the hub's shard locks.
type shardRouter struct {
	cluster  *redis.ClusterClient
	opts     *redis.ClusterOptions // what a master's pub/sub client is made from (masterOptions)
	delay    time.Duration
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger
	kick     chan struct{} // reload the slot map now

	mu      sync.Mutex
	owner   []string          // slot -> master address; nil until the first load
	shards  map[string]*shard // master address -> its shard
	pending map[string]Target // wanted before the first load
	changed chan struct{}     // closed and replaced when channels move
	run     *shardRun         // set while Run runs: where new shards start
}

// shardRun is what a Run gives the shards it starts.
type shardRun struct {
	ctx context.Context
	h   Handler
	wg  *sync.WaitGroup
}

// shard is the pub/sub connection to one master and the channels on it.
type shard struct {
	addr     string
	in       *interest
	cancel   context.CancelFunc // ends its loop; nil until started
	lastPong atomic.Int64       // unix ns of the last PING answered on the current connection; 0: none
	since    atomic.Int64       // unix ns since when it is down; 0: up or never up
}

func newShardRouter(c *redis.ClusterClient, o *redis.ClusterOptions, delay, interval, timeout time.Duration, log *slog.Logger) *shardRouter {
	return &shardRouter{
		cluster: c, opts: o,
		delay: delay, interval: interval, timeout: timeout, log: log,
		kick:    make(chan struct{}, 1),
		shards:  map[string]*shard{},
		pending: map[string]Target{},
		changed: make(chan struct{}),
	}
}

// masterOptions are the options of a client of the master at addr, from
// the Cluster's: the same credentials, TLS, dialer and timeouts.
func masterOptions(o *redis.ClusterOptions, addr string) *redis.Options {
	return &redis.Options{
		Addr: addr, Protocol: o.Protocol, Username: o.Username, Password: o.Password,
		CredentialsProvider: o.CredentialsProvider, CredentialsProviderContext: o.CredentialsProviderContext,
		TLSConfig: o.TLSConfig, Dialer: o.Dialer, OnConnect: o.OnConnect,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		ContextTimeoutEnabled: true, DialerRetries: 1, PoolSize: 1,
	}
}

// Want subscribes the node to t's channel on its slot's master.
func (sr *shardRouter) Want(t Target) {
	ch := t.Channel()
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sh := sr.shardOfLocked(ch); sh != nil {
		sh.in.Want(t)
		return
	}
	sr.pending[ch] = t
}

// Unwant says the last local client of t left.
func (sr *shardRouter) Unwant(t Target) {
	ch := t.Channel()
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sh := sr.shardOfLocked(ch); sh != nil {
		sh.in.Unwant(t)
		return
	}
	delete(sr.pending, ch)
}

// shardOfLocked is the shard of ch's slot; nil before the first load.
func (sr *shardRouter) shardOfLocked(ch string) *shard {
	if sr.owner == nil {
		return nil
	}
	return sr.shards[sr.owner[keySlot(ch)]]
}

// Await returns once every target wanted is subscribed on the master of
// its slot, following the channels that move meanwhile.
func (sr *shardRouter) Await(ctx context.Context, targets ...Target) error {
	for _, t := range targets {
		ch := t.Channel()
		for {
			sr.mu.Lock()
			sh, changed := sr.shardOfLocked(ch), sr.changed
			_, pending := sr.pending[ch]
			sr.mu.Unlock()
			var ready <-chan struct{}
			switch {
			case sh != nil:
				ready = sh.in.waitFor(ch)
			case !pending:
				// Unwanted before the slot map came.
			default:
				ready = changed
			}
			if ready == nil {
				break
			}
			select {
			case <-ready:
			case <-changed:
			case <-ctx.Done():
				return fmt.Errorf("subscribe %s: %w: %w", ch, ErrUnavailable, ctx.Err())
			}
		}
	}
	return nil
}

// Subscribed counts the channels subscribed on every shard.
func (sr *shardRouter) Subscribed() int {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	n := 0
	for _, sh := range sr.shards {
		n += sh.in.Subscribed()
	}
	return n
}

// reload asks for the slot map to be read again now.
func (sr *shardRouter) reload() {
	select {
	case sr.kick <- struct{}{}:
	default:
	}
}

// minReload spaces the reloads a burst of MOVED answers asks for.
const minReload = 100 * time.Millisecond

// Run keeps a shard for every master of the slot map, each reading its
// connection and handing messages to h, until ctx ends. It returns once
// every shard's loop has ended.
func (sr *shardRouter) Run(ctx context.Context, h Handler) {
	var wg sync.WaitGroup
	sr.mu.Lock()
	sr.run = &shardRun{ctx: ctx, h: h, wg: &wg}
	for _, sh := range sr.shards {
		sr.startLocked(sh)
	}
	sr.mu.Unlock()
	defer func() {
		sr.mu.Lock()
		sr.run = nil
		for _, sh := range sr.shards {
			sh.cancel()
			sh.cancel = nil
		}
		sr.mu.Unlock()
		wg.Wait()
	}()
	t := time.NewTicker(sr.interval)
	defer t.Stop()
	failing := false
	for {
		err := sr.load(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			sr.log.Warn("redis cluster: reading the slot map failed; shards keep the last one", "err", err)
		case err == nil && failing:
			sr.log.Info("redis cluster: slot map read again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-sr.kick:
			if !service.Sleep(ctx, minReload) {
				return
			}
		}
	}
}

// load reads CLUSTER SHARDS and applies it.
func (sr *shardRouter) load(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sr.timeout)
	defer cancel()
	shards, err := sr.cluster.ClusterShards(ctx).Result()
	if err != nil {
		return fmt.Errorf("cluster shards: %w", err)
	}
	owner, err := slotOwners(shards)
	if err != nil {
		// The Cluster is not whole. Shards keep what they have; readiness
		// fails through the masters' check.
		return err
	}
	sr.apply(owner)
	return nil
}

// slotOwners reads CLUSTER SHARDS into slot -> master address, the
// address as MOVED names it (the preferred endpoint, else the IP).
func slotOwners(shards []redis.ClusterShard) ([]string, error) {
	owner := make([]string, clusterSlots)
	for _, s := range shards {
		i := slices.IndexFunc(s.Nodes, func(n redis.Node) bool { return n.Role == "master" })
		if i < 0 {
			continue
		}
		n := s.Nodes[i]
		host := n.Endpoint
		if host == "" || host == "?" {
			host = n.IP
		}
		addr := net.JoinHostPort(host, strconv.FormatInt(n.Port, 10))
		for _, r := range s.Slots {
			for slot := max(r.Start, 0); slot <= min(r.End, clusterSlots-1); slot++ {
				owner[slot] = addr
			}
		}
	}
	if i := slices.Index(owner, ""); i >= 0 {
		return nil, fmt.Errorf("cluster shards: slot %d has no master", i)
	}
	return owner, nil
}

// apply installs a slot map: a shard for every master in it, the channels
// of slots that changed master moved to their new shard (without a
// command to the old one: it dropped them already, or will answer MOVED),
// and the shards of addresses that are no master any more stopped. The
// map read every probe interval is mostly the one installed: then there is
// nothing to do, and no channel's slot is computed.
func (sr *shardRouter) apply(owner []string) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if slices.Equal(owner, sr.owner) {
		return
	}
	first := sr.owner == nil
	sr.owner = owner
	masters := map[string]bool{}
	for _, a := range owner {
		masters[a] = true
	}
	for a := range masters {
		if sr.shards[a] == nil {
			sh := &shard{addr: a, in: newInterest(sr.delay, true)}
			sr.shards[a] = sh
			sr.startLocked(sh)
		}
	}
	moved := slices.Collect(maps.Values(sr.pending))
	clear(sr.pending)
	for a, sh := range sr.shards {
		gone := !masters[a]
		moved = append(moved, sh.in.forgetIf(func(ch string) bool { return !gone && owner[keySlot(ch)] == a })...)
		if gone {
			if sh.cancel != nil {
				sh.cancel()
			}
			delete(sr.shards, a)
			sr.log.Info("redis cluster: no longer a master; its shard channels moved", "master", a)
		}
	}
	for _, t := range moved {
		sr.shards[owner[keySlot(t.Channel())]].in.Want(t)
	}
	if first || len(moved) > 0 {
		close(sr.changed)
		sr.changed = make(chan struct{})
	}
	if len(moved) > 0 && !first {
		sr.log.Info("redis cluster: shard channels moved to the masters now serving their slots", "channels", len(moved))
	}
}

// moved applies a MOVED answer at once: slot is served by addr now (the
// full slot map follows at the next load).
func (sr *shardRouter) moved(slot int, addr string) {
	sr.mu.Lock()
	if sr.owner == nil || slot < 0 || slot >= clusterSlots || sr.owner[slot] == addr || sr.shards[addr] == nil {
		sr.mu.Unlock()
		sr.reload()
		return
	}
	owner := append([]string(nil), sr.owner...)
	owner[slot] = addr
	sr.mu.Unlock()
	sr.apply(owner)
	sr.reload()
}

// startLocked starts sh's loop when Run runs.
func (sr *shardRouter) startLocked(sh *shard) {
	if sr.run == nil || sh.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(sr.run.ctx)
	sh.cancel = cancel
	h := sr.run.h
	sr.run.wg.Go(func() { sr.loop(ctx, sh, h) })
}

// ready is nil when the slot map is loaded and every shard's connection
// answered a PING within the probe timeout.
func (sr *shardRouter) ready(now time.Time) error {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.owner == nil {
		return errors.New("redis cluster: the slot map is not loaded yet")
	}
	var worst string // of the shards not answering, the first by address
	var err error
	for a, sh := range sr.shards {
		last := sh.lastPong.Load()
		var e error
		switch {
		case last == 0:
			e = fmt.Errorf("redis shard %s: its subscription is not connected", a)
		case now.Sub(time.Unix(0, last)) > sr.timeout:
			e = fmt.Errorf("redis shard %s: no answer on its subscription for %s", a, now.Sub(time.Unix(0, last)).Round(time.Millisecond))
		}
		if e != nil && (err == nil || a < worst) {
			worst, err = a, e
		}
	}
	return err
}

// ---- one shard's connection ----

// loop runs sessions on sh's master until ctx ends, with backoff between.
func (sr *shardRouter) loop(ctx context.Context, sh *shard, h Handler) {
	client := redis.NewClient(masterOptions(sr.opts, sh.addr))
	client.AddHook(newDialHook(sr.opts.TLSConfig, sr.opts.Dialer))
	defer func() { _ = client.Close() }()
	bo := &backoff{}
	for {
		err := sr.session(ctx, client, sh, h, bo)
		wasUp := sh.lastPong.Swap(0) != 0
		sh.in.reset()
		if ctx.Err() != nil {
			return
		}
		if wasUp || sh.since.Load() == 0 { // the outage begins: said once
			sh.since.Store(time.Now().UnixNano())
			sr.log.Warn("redis shard subscription lost; reconnecting", "master", sh.addr, "err", err)
		} else {
			sr.log.Debug("redis shard still unreachable", "master", sh.addr, "err", err)
		}
		if !bo.wait(ctx, nil) {
			return
		}
	}
}

// session dials sh's master with a PING, then reads the connection while
// the interest's commands and a PING every probe interval go out on it.
func (sr *shardRouter) session(ctx context.Context, client *redis.Client, sh *shard, h Handler, bo *backoff) error {
	tap := &pushTap{h: h}
	ctx = withTap(ctx, tap)
	ps := client.Subscribe(ctx) // no channel: does not dial
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()
	dctx, cancel := context.WithTimeout(ctx, sr.timeout)
	err := ps.Ping(dctx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	sctx, cancelSend := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := sh.in.send(sctx, ps); err != nil && sctx.Err() == nil {
			sr.log.Warn("redis shard subscribe failed; starting a new subscription", "master", sh.addr, "err", err)
			_ = ps.Close() // ends the read below
		}
	})
	wg.Go(func() { sr.pinger(sctx, ps) })
	err = sr.receive(context.WithValue(ctx, noRedial{}, true), ps, sh, tap, bo)
	cancelSend()
	wg.Wait()
	return err
}

// pinger PINGs on ps every probe interval until ctx ends: the answer,
// read in order after every message before it, shows the connection alive
// and its reader keeping up.
func (sr *shardRouter) pinger(ctx context.Context, ps *redis.PubSub) {
	t := time.NewTicker(sr.interval)
	defer t.Stop()
	pctx := context.WithValue(ctx, noRedial{}, true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ps.Ping(pctx); err != nil {
			return // the read sees the connection end
		}
	}
}

// receive reads ps until ctx ends (nil), the connection fails, or nothing,
// not even a PING's answer, arrives for the probe timeout. The messages
// are delivered to tap's Handler while ps is read (pushConn).
func (sr *shardRouter) receive(ctx context.Context, ps *redis.PubSub, sh *shard, tap *pushTap, bo *backoff) error {
	h := tap.h
	defer flush(h)
	lastMsg := time.Now()
	var taken uint64
	for {
		if tap.tookSince(&taken) {
			lastMsg = time.Now()
		}
		wait := sr.timeout - time.Since(lastMsg)
		if wait <= 0 {
			return fmt.Errorf("%w for %s", errSilent, sr.timeout)
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if isTimeout(err) {
				continue
			}
			if slot, addr, ok := movedTo(err); ok {
				// An SSUBSCRIBE or SUNSUBSCRIBE for a slot this master
				// no longer serves.
				sr.moved(slot, addr)
				lastMsg = time.Now()
				continue
			}
			return err
		}
		lastMsg = time.Now()
		// The messages (smessage) never get here: pushConn delivers them
		// before go-redis reads the connection.
		switch m := msg.(type) {
		case *redis.Subscription:
			if !sh.in.answered(m.Channel) && m.Kind == "sunsubscribe" {
				sh.in.dropped(m.Channel)
				sr.reload()
			}
		case *redis.Pong:
			if sh.lastPong.Swap(lastMsg.UnixNano()) == 0 {
				bo.reset()
				if since := sh.since.Swap(0); since != 0 {
					sr.log.Info("redis shard subscription back", "master", sh.addr,
						"down_for", time.Since(time.Unix(0, since)).Round(time.Millisecond))
				}
			}
		}
	}
}

// movedTo reads a MOVED error: "MOVED <slot> <host:port>".
func movedTo(err error) (slot int, addr string, ok bool) {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return 0, "", false
	}
	f := strings.Fields(rerr.Error())
	if len(f) != 3 || f[0] != "MOVED" {
		return 0, "", false
	}
	slot, convErr := strconv.Atoi(f[1])
	if convErr != nil {
		return 0, "", false
	}
	return slot, f[2], true
}

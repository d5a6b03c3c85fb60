package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// SubscribeMode says which channels a Redis broker subscribes to
// (NOTIFY_SUBSCRIBE_MODE).
type SubscribeMode string

const (
	// SubscribePattern: PSUBSCRIBE notify:* notify_topic:*. Every node
	// reads every message, and discards what it has no client for.
	SubscribePattern SubscribeMode = "pattern"
	// SubscribeUser: SUBSCRIBE notify:<id> for every user, and
	// notify_topic:<name> for every topic, with a client on this node
	// (Want), so a message reaches only the nodes that serve it, and
	// PUBLISH answers 0 for a user connected nowhere.
	SubscribeUser SubscribeMode = "user"
	// SubscribeSharded (Redis Cluster only): as SubscribeUser, with
	// sharded pub/sub: SSUBSCRIBE on the master of each channel's slot,
	// and SPUBLISH, so a message crosses no cluster bus and reaches only
	// the master of its slot and the nodes serving it.
	SubscribeSharded SubscribeMode = "sharded"
)

// ParseSubscribeMode checks a NOTIFY_SUBSCRIBE_MODE value; empty is
// SubscribePattern.
func ParseSubscribeMode(s string) (SubscribeMode, error) {
	switch m := SubscribeMode(s); m {
	case "":
		return SubscribePattern, nil
	case SubscribePattern, SubscribeUser, SubscribeSharded:
		return m, nil
	}
	return "", fmt.Errorf("unknown subscribe mode %q (want %s, %s or %s)", s, SubscribePattern, SubscribeUser, SubscribeSharded)
}

// PerChannel tells whether the mode subscribes per user and topic (Want,
// Unwant, Await matter).
func (m SubscribeMode) PerChannel() bool { return m == SubscribeUser || m == SubscribeSharded }

// Defaults of the per-channel subscriptions.
const (
	// DefaultUnsubscribeDelay is how long a channel stays subscribed after
	// its last local client left: a client that reconnects at once (a
	// page reload, a deploy) finds it still there.
	DefaultUnsubscribeDelay = 5 * time.Second
	// subscribeBatch bounds the channels of one SUBSCRIBE or UNSUBSCRIBE,
	// so that a resubscribe of every channel after a reconnect does not
	// hold Redis in one command (each channel is a dictionary insert and a
	// reply) and confirmations come back while the rest is sent.
	subscribeBatch = 500
)

// Want subscribes to t's channel in SubscribeUser and SubscribeSharded (a
// local client of t arrived); a no-op in SubscribePattern. It does not
// block: Await waits.
func (r *Redis) Want(t Target) {
	switch {
	case r.interest != nil:
		r.interest.Want(t)
	case r.shards != nil:
		r.shards.Want(t)
	}
}

// Unwant says the last local client of t left: its channel is unsubscribed
// after the unsubscribe delay, unless Want comes first.
func (r *Redis) Unwant(t Target) {
	switch {
	case r.interest != nil:
		r.interest.Unwant(t)
	case r.shards != nil:
		r.shards.Unwant(t)
	}
}

// Await returns once every target wanted is subscribed on the current
// connection, so that a message published from then on reaches the
// handler; at once in SubscribePattern. Its error wraps ErrUnavailable.
func (r *Redis) Await(ctx context.Context, targets ...Target) error {
	switch {
	case r.interest != nil:
		return r.interest.Await(ctx, targets...)
	case r.shards != nil:
		return r.shards.Await(ctx, targets...)
	}
	return nil
}

// interest is the set of channels a node in user mode subscribes to, and
// the state of each on the current pub/sub connection. Its lock is a leaf:
// Want and Unwant are called under the hub's shard locks.
type interest struct {
	delay   time.Duration // DefaultUnsubscribeDelay unless set
	sharded bool          // SSUBSCRIBE and SUNSUBSCRIBE, one command per slot

	mu    sync.Mutex
	subs  map[string]*channelSub
	queue []string    // channels with a command due (channelSub.queued)
	idle  []idleEntry // unwanted channels, oldest first
	wake  chan struct{}
	count int // channels subscribed on the current connection
}

// channelSub is one channel: whether a local client wants it and what was
// sent for it on the current connection. Redis answers every channel of
// every SUBSCRIBE and UNSUBSCRIBE, in order, so once every command is
// answered (acked == sent) the connection is in the state of the last one.
type channelSub struct {
	wanted  bool
	queued  bool
	sent    int           // commands sent for it on this connection
	acked   int           // their answers received
	lastSub bool          // the last command sent was SUBSCRIBE
	idleAt  time.Time     // when wanted turned false
	ready   chan struct{} // closed when subscribed; nil when nobody waits
}

type idleEntry struct {
	channel string
	at      time.Time
}

func newInterest(delay time.Duration, sharded bool) *interest {
	return &interest{delay: delay, sharded: sharded, subs: map[string]*channelSub{}, wake: make(chan struct{}, 1)}
}

func (s *channelSub) subscribed() bool { return s.sent > 0 && s.acked == s.sent && s.lastSub }

// Want subscribes the node to t's channel (if it is not already): a local
// client of t arrived. It does not wait; Await does.
func (in *interest) Want(t Target) {
	ch := t.Channel()
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.subs[ch]
	if s == nil {
		s = &channelSub{}
		in.subs[ch] = s
	}
	if s.wanted {
		return
	}
	s.wanted = true
	if !s.lastSub || s.sent == 0 {
		in.enqueueLocked(ch, s)
	}
}

// Unwant says the last local client of t left: the channel is
// unsubscribed after the delay, unless Want comes first.
func (in *interest) Unwant(t Target) {
	ch := t.Channel()
	now := time.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.subs[ch]
	if s == nil || !s.wanted {
		return
	}
	s.wanted, s.idleAt = false, now
	in.idle = append(in.idle, idleEntry{ch, now})
	if len(in.idle) == 1 {
		in.wakeLocked() // the sender times the oldest
	}
}

// Await returns once each target's channel is subscribed on the current
// connection (a message published from then on arrives), or ctx's error.
// A target no client wants is not waited for.
func (in *interest) Await(ctx context.Context, targets ...Target) error {
	for _, t := range targets {
		ch := t.Channel()
		ready := in.waitFor(ch)
		if ready == nil {
			continue
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return fmt.Errorf("subscribe %s: %w: %w", ch, ErrUnavailable, ctx.Err())
		}
	}
	return nil
}

// waitFor returns a channel closed once ch is subscribed (or forgotten);
// nil when there is nothing to wait for: ch is subscribed, or unwanted.
func (in *interest) waitFor(ch string) <-chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.subs[ch]
	if s == nil || !s.wanted || s.subscribed() {
		return nil
	}
	if s.ready == nil {
		s.ready = make(chan struct{})
	}
	return s.ready
}

// Subscribed counts the channels subscribed on the current connection.
func (in *interest) Subscribed() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.count
}

func (in *interest) enqueueLocked(ch string, s *channelSub) {
	if s.queued {
		return
	}
	s.queued = true
	in.queue = append(in.queue, ch)
	if len(in.queue) == 1 {
		in.wakeLocked()
	}
}

func (in *interest) wakeLocked() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// answered records Redis's answer for one channel of a SUBSCRIBE or an
// UNSUBSCRIBE on the current connection; false when no command of ch was
// waiting for one (not ours, an answer to a connection before this one, or
// a SUNSUBSCRIBE Redis sent by itself).
func (in *interest) answered(ch string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.subs[ch]
	if s == nil || s.acked >= s.sent {
		return false
	}
	s.acked++
	if s.acked < s.sent {
		return true
	}
	if s.lastSub {
		in.count++
	}
	switch {
	case s.lastSub && s.ready != nil:
		close(s.ready)
		s.ready = nil
	case !s.lastSub && !s.wanted && !s.queued:
		delete(in.subs, ch)
	}
	return true
}

// dropped records that Redis unsubscribed ch by itself (a sharded channel
// whose slot left the master): it is not subscribed any more, and is
// subscribed again if wanted.
func (in *interest) dropped(ch string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.subs[ch]
	if s == nil || !s.subscribed() {
		return
	}
	in.count--
	s.sent, s.acked, s.lastSub = 0, 0, false
	if !s.wanted {
		delete(in.subs, ch)
		return
	}
	in.enqueueLocked(ch, s)
}

// forgetIf drops, without a command, every channel that keep refuses (its
// slot is served by another master now), wakes its Await, and returns the
// targets among them a client wants, for the interest that serves them now.
func (in *interest) forgetIf(keep func(ch string) bool) []Target {
	in.mu.Lock()
	defer in.mu.Unlock()
	var moved []Target
	for ch, s := range in.subs {
		if keep(ch) {
			continue
		}
		if s.subscribed() {
			in.count--
		}
		if s.ready != nil {
			close(s.ready)
		}
		delete(in.subs, ch)
		if t, ok := ParseChannel(ch); ok && s.wanted {
			moved = append(moved, t)
		}
	}
	return moved // next skips what is still queued for them
}

// reset forgets what was sent on the connection that ended and queues a
// subscribe of every wanted channel for the next; unwanted ones are
// dropped (a new connection starts with none).
func (in *interest) reset() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.count = 0
	in.queue = in.queue[:0]
	for ch, s := range in.subs {
		s.sent, s.acked, s.lastSub, s.queued = 0, 0, false, false
		if !s.wanted {
			delete(in.subs, ch)
			continue
		}
		s.queued = true
		in.queue = append(in.queue, ch)
	}
}

// next takes the commands due at now, at most subscribeBatch channels of
// each kind, and counts them as sent; and says when the oldest unwanted
// channel falls due (zero: none).
func (in *interest) next(now time.Time) (sub, unsub []string, due time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for len(in.idle) > 0 {
		e := in.idle[0]
		if e.at.Add(in.delay).After(now) {
			due = e.at.Add(in.delay)
			break
		}
		in.idle = in.idle[1:]
		if s := in.subs[e.channel]; s != nil && !s.wanted && s.idleAt.Equal(e.at) {
			in.enqueueLocked(e.channel, s)
		}
	}
	if len(in.idle) == 0 {
		in.idle = nil // let a long backlog's array go
	}
	n := 0
	for ; n < len(in.queue) && len(sub) < subscribeBatch && len(unsub) < subscribeBatch; n++ {
		ch := in.queue[n]
		s := in.subs[ch]
		if s == nil {
			continue
		}
		s.queued = false
		switch {
		case s.wanted && (s.sent == 0 || !s.lastSub):
			// Not subscribed now (never, or an UNSUBSCRIBE is the last).
			sub = append(sub, ch)
			s.sent, s.lastSub = s.sent+1, true
		case !s.wanted && s.sent == 0:
			delete(in.subs, ch) // never subscribed on this connection
		case !s.wanted && s.lastSub:
			if s.subscribed() {
				in.count--
			}
			unsub = append(unsub, ch)
			s.sent, s.lastSub = s.sent+1, false
		}
	}
	in.queue = in.queue[n:]
	if len(in.queue) == 0 {
		in.queue = nil
	}
	return sub, unsub, due
}

// send issues the subscription commands on ps as they fall due, until ctx
// ends (nil) or a command fails; ps's calls run under a noRedial context.
func (in *interest) send(ctx context.Context, ps *redis.PubSub) error {
	cctx := context.WithValue(ctx, noRedial{}, true)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		sub, unsub, due := in.next(time.Now())
		if err := in.command(cctx, ps, true, sub); err != nil {
			return fmt.Errorf("subscribe %d channels: %w", len(sub), err)
		}
		if err := in.command(cctx, ps, false, unsub); err != nil {
			return fmt.Errorf("unsubscribe %d channels: %w", len(unsub), err)
		}
		if len(sub) == subscribeBatch || len(unsub) == subscribeBatch {
			continue // more queued
		}
		wait := time.Hour
		if !due.IsZero() {
			wait = max(time.Until(due), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-in.wake:
		case <-timer.C:
		}
	}
}

// command sends one SUBSCRIBE (or UNSUBSCRIBE) of channels on ps; when
// sharded, one SSUBSCRIBE (SUNSUBSCRIBE) per slot, since Redis refuses a
// command whose channels lie in different slots (CROSSSLOT). go-redis
// writes each without waiting for its answers.
func (in *interest) command(ctx context.Context, ps *redis.PubSub, subscribe bool, channels []string) error {
	if len(channels) == 0 {
		return nil
	}
	if !in.sharded {
		if subscribe {
			return ps.Subscribe(ctx, channels...)
		}
		return ps.Unsubscribe(ctx, channels...)
	}
	for _, group := range bySlot(channels) {
		var err error
		if subscribe {
			err = ps.SSubscribe(ctx, group...)
		} else {
			err = ps.SUnsubscribe(ctx, group...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// registerSubscriptions exports notify_broker_subscriptions; a
// second broker on the same registry (tests) keeps the first one's.
func registerSubscriptions(reg prometheus.Registerer, subscribed func() int) error {
	if reg == nil {
		return nil
	}
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "notify_broker_subscriptions",
		Help: "Channels of users and topics this node is subscribed to on Redis (NOTIFY_SUBSCRIBE_MODE=user or sharded).",
	}, func() float64 { return float64(subscribed()) })
	if _, err := register(reg, g); err != nil {
		return fmt.Errorf("broker: registering metrics: %w", err)
	}
	return nil
}

package broker

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ProbePrefix starts the channel each node publishes its liveness probes on
// (ProbePrefix + node id). It matches neither UserPattern nor TopicPattern, so
// a probe is never handed to the Handler and never delivered twice.
const ProbePrefix = "notify_probe:"

// RedisOptions tunes a Redis broker. Zero values mean the defaults.
type RedisOptions struct {
	ProbeInterval time.Duration // default 1s: how often a probe is published
	ProbeTimeout  time.Duration // default 3s: no probe back for this long -> not ready
	Logger        *slog.Logger  // default slog.Default()
	Registerer    prometheus.Registerer
	NodeID        string // used in the probe channel name; random when empty
	// History bounds every stream's history; Size 0 (the zero value) turns
	// it off: then nothing is loaded into Redis, and Append, Read, Received
	// and Claim return errors wrapping ErrHistoryOff.
	History HistoryConfig
	// Subscribe is the subscribe mode; empty is SubscribePattern. In
	// SubscribeUser the node says which users and topics it serves (Want,
	// Unwant) and the broker subscribes to just their channels.
	Subscribe SubscribeMode
	// UnsubscribeDelay (SubscribeUser) keeps a channel subscribed this long
	// after its last client left; 0 is DefaultUnsubscribeDelay.
	UnsubscribeDelay time.Duration
}

// Default probe settings.
const (
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = 3 * time.Second
)

// Reconnect backoff bounds (exponential with jitter).
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 2 * time.Second
)

// Redis is the Broker and StateStore on a Redis server: a pooled client for
// publishes, probes and state, and one dedicated pub/sub connection read by
// Run.
type Redis struct {
	client       redis.UniversalClient
	cluster      *redis.ClusterClient         // client again on a Cluster: readiness and the library cover every master
	masters      atomic.Pointer[mastersCheck] // Cluster: the last check of every master in this Run
	log          *slog.Logger
	metrics      *metrics
	probeChannel string
	interval     time.Duration // between probes
	timeout      time.Duration // probe round trip deadline; also the silence limit of the subscription

	running    atomic.Bool
	closed     atomic.Bool
	subscribed atomic.Bool  // the current pub/sub connection holds all our subscriptions
	probed     atomic.Bool  // a probe came back on the current subscription
	runStart   atomic.Int64 // unix ns when the running Run started
	lastProbe  atomic.Int64 // unix ns when a probe last came back; 0 = none in this Run
	kick       chan struct{}
	// answered is signaled (size 1) by each probe publish that succeeds:
	// Redis answers again, and a reader waiting out its backoff retries
	// now (backoff.wait). Why: in an outage the delay reaches 1-2 s, and an
	// attempt that came just after the cause was gone waited it out in
	// full; the probe tries every interval. A partition-redis run of make
	// fault had its node's clients wait 2.38 s after the heal (bound 2 s).
	// With Redis up and the subscription failing, the reader retries about
	// once a probe interval once its backoff has grown past it.
	answered chan struct{}

	errMu   sync.Mutex
	lastErr error // why the round trip fails, cleared by a probe coming back

	hist   *redisHistory
	syncs  syncWaiters // Syncs waiting for their marker
	states stateReads  // GetState's pipelines

	mode SubscribeMode
	// interest is the per-channel subscriptions of SubscribeUser; nil in
	// the other modes.
	interest *interest
	// shards are the per-channel subscriptions of SubscribeSharded, one
	// connection per master; nil in the other modes.
	shards *shardRouter
}

var (
	_ Broker     = (*Redis)(nil)
	_ StateStore = (*Redis)(nil)
)

// NewRedis returns a Redis broker on the server opts describes: it is
// NewRedisTopology with RedisTopology{Single: opts}.
func NewRedis(opts *redis.Options, o RedisOptions) (*Redis, error) {
	if opts == nil {
		return nil, errors.New("broker: nil redis options")
	}
	return NewRedisTopology(RedisTopology{Single: opts}, o)
}

// NewRedisTopology returns a Redis broker on the topology t. It does not
// contact Redis: Redis may be down at start, Run keeps trying.
//
// t's options are copied and adjusted: ContextTimeoutEnabled is set, so
// that context deadlines bound every command, and DialerRetries defaults to
// 1 (go-redis would dial 5 times per attempt, and with its command retries
// a call would take seconds to report an unreachable server; Run retries by
// itself).
func NewRedisTopology(t RedisTopology, o RedisOptions) (*Redis, error) {
	if o.ProbeInterval < 0 || o.ProbeTimeout < 0 {
		return nil, errors.New("broker: negative probe interval or timeout")
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = max(DefaultProbeTimeout, 3*o.ProbeInterval)
	}
	if o.ProbeTimeout <= o.ProbeInterval {
		return nil, fmt.Errorf("broker: probe timeout %s must exceed the probe interval %s", o.ProbeTimeout, o.ProbeInterval)
	}
	if err := checkHistory(o.History); err != nil {
		return nil, err
	}
	mode, err := ParseSubscribeMode(string(o.Subscribe))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if o.UnsubscribeDelay < 0 {
		return nil, errors.New("broker: negative unsubscribe delay")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.NodeID == "" {
		var b [8]byte
		_, _ = crand.Read(b[:])
		o.NodeID = hex.EncodeToString(b[:])
	}
	client, cluster, err := t.newClient()
	if err != nil {
		return nil, err
	}
	hook := t.dialHook()
	client.AddHook(hook)
	if cluster != nil {
		cluster.OnNewNode(func(c *redis.Client) { c.AddHook(hook) })
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("broker: registering metrics: %w", err)
	}
	r := &Redis{
		mode:         mode,
		client:       client,
		cluster:      cluster,
		log:          o.Logger.With("component", "broker", "redis", t.String()),
		metrics:      m,
		probeChannel: ProbePrefix + o.NodeID,
		interval:     o.ProbeInterval,
		timeout:      o.ProbeTimeout,
		kick:         make(chan struct{}, 1),
		answered:     make(chan struct{}, 1),
		hist:         newRedisHistory(o.History),
		states:       stateReads{client: client},
	}
	if err := r.perChannel(t, o); err != nil {
		_ = client.Close()
		return nil, err
	}
	return r, nil
}

// perChannel sets up the per-channel subscriptions of SubscribeUser and
// SubscribeSharded, and their metric.
func (r *Redis) perChannel(t RedisTopology, o RedisOptions) error {
	delay := cmp.Or(o.UnsubscribeDelay, DefaultUnsubscribeDelay)
	var subscribed func() int
	switch r.mode {
	case SubscribeUser:
		r.interest = newInterest(delay, false)
		subscribed = r.interest.Subscribed
	case SubscribeSharded:
		if r.cluster == nil {
			return fmt.Errorf("broker: subscribe mode %s needs a Redis Cluster (REDIS_CLUSTER_ADDRS), not %s", r.mode, t)
		}
		r.shards = newShardRouter(r.cluster, t.Cluster, delay, o.ProbeInterval, o.ProbeTimeout, r.log)
		subscribed = r.shards.Subscribed
	default:
		return nil
	}
	return registerSubscriptions(o.Registerer, subscribed)
}

// Close closes the connections. Call it after Run has returned; a Run still
// running returns errClosed soon after.
func (r *Redis) Close() error {
	r.closed.Store(true)
	err := r.client.Close()
	r.states.wait() // its pipeline fails fast on the closed client
	return err
}

// ---- publishing and state (pooled client) ----

// Publish sends payload on channel: SPUBLISH for a user's or a topic's
// channel in SubscribeSharded, else PUBLISH.
func (r *Redis) Publish(ctx context.Context, channel string, payload []byte) error {
	if err := r.publish(ctx, r.client, channel, payload).Err(); err != nil {
		return wrapErr("publish", err)
	}
	return nil
}

// publish issues the publish of channel on c (the client or a pipeline).
func (r *Redis) publish(ctx context.Context, c redis.Cmdable, channel string, payload []byte) *redis.IntCmd {
	if r.mode == SubscribeSharded {
		if _, ours := ParseChannel(channel); ours {
			return c.SPublish(ctx, channel, payload)
		}
	}
	return c.Publish(ctx, channel, payload)
}

// PublishMany sends payload on every channel, in one pipeline.
func (r *Redis) PublishMany(ctx context.Context, channels []string, payload []byte) error {
	switch len(channels) {
	case 0:
		return nil
	case 1:
		return r.Publish(ctx, channels[0], payload)
	}
	pipe := r.client.Pipeline()
	for _, ch := range channels {
		r.publish(ctx, pipe, ch, payload)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return wrapErr("publish", err)
	}
	return nil
}

// GetState returns all fields of the user's state hash; an empty map when
// the hash does not exist.
func (r *Redis) GetState(ctx context.Context, userID string) (map[string]string, error) {
	m, err := r.states.get(ctx, StateKey(userID))
	if err != nil {
		return nil, wrapErr("get state", err)
	}
	if m == nil {
		m = map[string]string{}
	}
	return m, nil
}

// SetState merges fields into the user's state hash (HSET).
func (r *Redis) SetState(ctx context.Context, userID string, fields map[string]string) error {
	if len(fields) == 0 {
		return nil
	}
	if err := r.client.HSet(ctx, StateKey(userID), fields).Err(); err != nil {
		return wrapErr("set state", err)
	}
	return nil
}

// DeleteState removes the named fields (HDEL), or the whole hash (DEL) when
// none are named.
func (r *Redis) DeleteState(ctx context.Context, userID string, fields ...string) error {
	var err error
	if len(fields) == 0 {
		err = r.client.Del(ctx, StateKey(userID)).Err()
	} else {
		err = r.client.HDel(ctx, StateKey(userID), fields...).Err()
	}
	if err != nil {
		return wrapErr("delete state", err)
	}
	return nil
}

// wrapErr adds context to err, and ErrUnavailable when err means the server
// cannot be reached or cannot serve right now. The caller's own cancellation
// and plain command errors (e.g. WRONGTYPE) are not unavailability.
func wrapErr(op string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !errors.Is(err, redis.ErrClosed) {
		// A reply from the server: only the "cannot serve now" kinds.
		for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "MAXCLIENTS", "ERR max number of clients"} {
			if strings.HasPrefix(rerr.Error(), p) {
				return true
			}
		}
		return false
	}
	// Dial and I/O errors, timeouts, pool timeouts, a closed client.
	return true
}

// ---- readiness ----

// Ready returns nil while a probe published through the pooled client came
// back through the subscription within the probe timeout. A probe read later
// than that after its publish does not count: it shows the reader that far
// behind. So Ready fails from a stall of the reader or the loss of the
// subscription until a probe made the round trip on a confirmed one.
func (r *Redis) Ready() error {
	if !r.running.Load() {
		return errNotRunning
	}
	now := time.Now()
	last := r.lastProbe.Load()
	if r.isReady(now) {
		return nil
	}
	if err := r.mastersReady(now); err != nil {
		return err
	}
	if err := r.shardsReady(now); err != nil {
		return err
	}
	since := now.Sub(time.Unix(0, max(last, r.runStart.Load()))).Round(time.Millisecond)
	msg := "redis: no probe round trip for " + since.String()
	if last == 0 {
		msg = "redis: no probe round trip yet (running for " + since.String() + ")"
	}
	if err := r.lastError(); err != nil {
		return fmt.Errorf("%s: %w", msg, err)
	}
	if !r.subscribed.Load() {
		return errors.New(msg + ": not subscribed")
	}
	return errors.New(msg)
}

// isReady: a probe came back on the current subscription (so a probe sent
// before an outage does not count once resubscribed: it proves nothing about
// the pooled client) and the last one is recent.
func (r *Redis) isReady(now time.Time) bool {
	last := r.lastProbe.Load()
	return r.running.Load() && r.probed.Load() && last != 0 && now.Sub(time.Unix(0, last)) <= r.timeout &&
		r.mastersReady(now) == nil && r.shardsReady(now) == nil
}

// shardsReady is nil unless the user's and topics' channels are sharded
// (SubscribeSharded) and some master's subscription is not working.
func (r *Redis) shardsReady(now time.Time) error {
	if r.shards == nil {
		return nil
	}
	return r.shards.ready(now)
}

func (r *Redis) updateUp() { r.metrics.setUp(r.isReady(time.Now())) }

func (r *Redis) setError(err error) {
	r.errMu.Lock()
	r.lastErr = err
	r.errMu.Unlock()
}

func (r *Redis) lastError() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.lastErr
}

// ---- Run: subscription reader and probe ----

// Run subscribes to UserPattern, TopicPattern, ControlChannel and the node's
// probe channel on one dedicated connection and calls h inline until ctx
// ends: h.Deliver for every pattern message, h.Control for every message on
// ControlChannel. It then returns nil, after which h is not called any more.
//
// Errors never end Run: it retries with exponential backoff and jitter (100ms
// up to 2s), or sooner once a probe publish succeeds (answered). go-redis
// reconnects and resubscribes on the Receive after a connection error; a
// connection on which nothing at all (not even our probe) arrives for the
// probe timeout is closed and replaced. Every loss of a working
// subscription is logged once and counted by reason (lostReasons).
// Only one Run may run at a time.
func (r *Redis) Run(ctx context.Context, h Handler) error {
	if h == nil {
		return errNilHandler
	}
	if r.closed.Load() {
		return errClosed
	}
	if !r.running.CompareAndSwap(false, true) {
		return errAlreadyRunning
	}
	r.runStart.Store(time.Now().UnixNano())
	r.lastProbe.Store(0)
	r.subscribed.Store(false)
	r.probed.Store(false)
	r.setError(nil)
	defer func() {
		r.subscribed.Store(false)
		r.probed.Store(false)
		r.running.Store(false)
		r.metrics.setUp(false)
		r.syncLost()
	}()

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.probeLoop(ctx) })
	if r.cluster != nil {
		wg.Go(func() { r.masterLoop(ctx) })
	}
	if r.shards != nil {
		h = &serialHandler{h: h} // several readers, one handler
		wg.Go(func() { r.shards.Run(ctx, h) })
	}
	if r.hist.cfg.Enabled() {
		wg.Go(func() { r.loadLoop(ctx) })
		r.kickLoad()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()

	st := &readerState{confirmed: make(map[string]bool, 4)}
	bo := &backoff{}
	for {
		err := r.session(ctx, h, st, bo)
		if ctx.Err() != nil {
			return nil
		}
		if r.closed.Load() {
			return errClosed
		}
		r.log.Debug("redis pub/sub session ended", "err", err)
		if !bo.wait(ctx, r.answered) {
			return nil
		}
	}
}

var errClosed = errors.New("broker: closed")

// readerState is what the reader knows across sessions.
type readerState struct {
	everSubscribed bool            // a subscription was complete once in this Run
	subscribed     bool            // the current connection holds all subscriptions
	confirmed      map[string]bool // subscriptions confirmed on the current connection
	downLogged     bool            // the current outage was logged
	lostAt         time.Time
	lostReason     string // why the current outage began; "" before the first subscription
	attempts       int    // failures in the current outage
	// position is the newest point of the stream the reader is known to
	// have reached on the current connection: the subscription's
	// confirmation, then each probe's publish time. How far it lags behind
	// the clock tells how far behind the reader is.
	position time.Time
}

// session runs one PubSub until ctx ends (nil), its subscription fails, or it
// stays silent for the probe timeout.
func (r *Redis) session(ctx context.Context, h Handler, st *readerState, bo *backoff) error {
	tap := &pushTap{h: h}
	ctx = withTap(ctx, tap)
	ps := r.client.Subscribe(ctx) // no channel yet: does not dial
	// Closing the PubSub from another goroutine is how a blocked Receive is
	// ended (go-redis's own Channel() health check does the same).
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()
	if err := r.subscribe(ctx, ps); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		err = fmt.Errorf("subscribe: %w", err)
		r.lost(st, err)
		return err
	}
	if r.interest != nil {
		return r.userSession(ctx, ps, tap, st, bo)
	}
	return r.receive(ctx, ps, tap, st, bo)
}

// userSession reads ps while the per-channel commands (SubscribeUser) go
// out on it, the wanted channels first, in batches. Either side failing
// ends the session: the next one starts on a new connection, and go-redis
// is kept from dialing again on this one (noRedial), where it would
// resubscribe every channel in one command.
func (r *Redis) userSession(ctx context.Context, ps *redis.PubSub, tap *pushTap, st *readerState, bo *backoff) error {
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.interest.send(sctx, ps); err != nil {
			r.log.Warn("redis subscribe failed; starting a new subscription", "err", err)
			_ = ps.Close() // ends the read below
		}
	}()
	err := r.receive(context.WithValue(ctx, noRedial{}, true), ps, tap, st, bo)
	cancel()
	<-done
	// Nothing is subscribed any more: Await waits for the next session,
	// which starts with every wanted channel queued.
	r.interest.reset()
	return err
}

// subscribe asks for all of the reader's subscriptions on ps, within the
// probe timeout.
func (r *Redis) subscribe(ctx context.Context, ps *redis.PubSub) error {
	// Patterns first: if the probe subscription fails after a go-redis
	// internal reconnect, the probe is missing (found by the silence check)
	// rather than the patterns (silent loss while the probe says ready).
	subCtx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if r.mode == SubscribePattern {
		if err := ps.PSubscribe(subCtx, UserPattern, TopicPattern); err != nil {
			return err
		}
	}
	return ps.Subscribe(subCtx, ControlChannel, r.probeChannel)
}

// receive reads ps until ctx ends (nil) or nothing arrives for the probe
// timeout. After a connection error it waits a backoff and reads on: go-redis
// dials again, resubscribing to everything. The messages for tap's Handler
// are delivered while ps is read (pushConn), and count as arrivals.
func (r *Redis) receive(ctx context.Context, ps *redis.PubSub, tap *pushTap, st *readerState, bo *backoff) error {
	h := tap.h
	defer flush(h)
	lastMsg := time.Now()
	var taken uint64
	for {
		if tap.tookSince(&taken) {
			lastMsg = time.Now()
		}
		wait := r.timeout - time.Since(lastMsg)
		if wait <= 0 {
			// Half-dead connection (no data, no RST): start afresh.
			err := fmt.Errorf("%w for %s", errSilent, r.timeout)
			r.lost(st, err)
			return err
		}
		// A timeout ends this connection (above), so a frame cut by the read
		// deadline is never parsed from the middle.
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if isTimeout(err) {
				continue
			}
			if r.closed.Load() {
				return errClosed
			}
			// go-redis has closed the connection and dials again, now or on
			// the next Receive, resubscribing to everything; in
			// SubscribeUser the session ends instead (userSession).
			r.lost(st, err)
			if r.interest != nil {
				return err
			}
			flush(h)
			if !bo.wait(ctx, r.answered) {
				return nil
			}
			lastMsg = time.Now()
			continue
		}
		r.handle(msg, time.Now(), h, st, bo)
		// Silence counts from here: time spent in a slow handler is not
		// the connection's (and the data it kept waiting is there to read).
		lastMsg = time.Now()
	}
}

// errSilent: the subscription delivered nothing, not even our probes, for
// the probe timeout.
var errSilent = errors.New("nothing received on the subscription")

// handle acts on what the subscription received at now: a message for h, a
// probe coming back, or a subscription confirmed.
func (r *Redis) handle(msg any, now time.Time, h Handler, st *readerState, bo *backoff) {
	switch m := msg.(type) {
	case *redis.Message:
		switch {
		case m.Pattern == "" && m.Channel == ControlChannel:
			h.Control(m.Payload)
		case m.Pattern == "" && m.Channel == r.probeChannel:
			r.probeBack(m.Payload, now, st)
		}
		// The messages of user and topic channels never get here: pushConn
		// delivers them before go-redis reads the connection.
	case *redis.Subscription:
		if r.interest != nil {
			if _, ours := ParseChannel(m.Channel); ours {
				r.interest.answered(m.Channel)
				return
			}
		}
		r.confirm(st, m, bo)
	}
}

// probeBack records what came back on the probe channel at now: a probe,
// its payload the publish time (unix ns), or a Sync's marker.
func (r *Redis) probeBack(payload string, now time.Time, st *readerState) {
	if strings.HasPrefix(payload, syncPrefix) {
		r.synced(payload) // a Sync's marker; also a probe
	}
	if !st.subscribed {
		return
	}
	if ns, err := strconv.ParseInt(payload, 10, 64); err == nil {
		sent := time.Unix(0, ns)
		if sent.After(st.position) {
			st.position = sent
		}
		// A probe older than the timeout shows a reader that far behind,
		// not a working round trip: one catching up on a backlog Redis has
		// since cut off would otherwise look ready until it reaches the end.
		if now.Sub(sent) > r.timeout {
			return
		}
	}
	r.lastProbe.Store(now.UnixNano())
	r.probed.Store(true)
	r.setError(nil)
	r.updateUp()
}

// confirm records a subscription confirmation; when all four are in, the
// connection is subscribed.
func (r *Redis) confirm(st *readerState, s *redis.Subscription, bo *backoff) {
	if s.Kind != "subscribe" && s.Kind != "psubscribe" {
		return
	}
	st.confirmed[s.Channel] = true
	patterns := r.mode != SubscribePattern || st.confirmed[UserPattern] && st.confirmed[TopicPattern]
	if st.subscribed || !patterns || !st.confirmed[ControlChannel] || !st.confirmed[r.probeChannel] {
		return
	}
	st.subscribed = true
	st.position = time.Now()
	r.subscribed.Store(true)
	bo.reset()
	if st.everSubscribed {
		r.metrics.reconnects.Inc()
		r.log.Info("redis pub/sub reconnected", "down_for", time.Since(st.lostAt).Round(time.Millisecond),
			"lost_because", st.lostReason, "failed_attempts", st.attempts)
	} else if r.mode != SubscribePattern {
		r.log.Info("redis pub/sub subscribed", "mode", r.mode, "probe_channel", r.probeChannel)
	} else {
		r.log.Info("redis pub/sub subscribed", "mode", SubscribePattern, "patterns", []string{UserPattern, TopicPattern}, "probe_channel", r.probeChannel)
	}
	st.everSubscribed = true
	st.downLogged = false
	st.attempts = 0
	// A restarted or failed-over server may have lost the library.
	r.kickLoad()
	// Probe now rather than at the next tick: readiness follows quickly.
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// lost records that the subscription is not (or no longer) working: Ready
// fails from here until a subscription is confirmed and a probe came back
// on it.
func (r *Redis) lost(st *readerState, err error) {
	now := time.Now()
	cause, reason, behind := err, "", time.Duration(0)
	if st.subscribed {
		behind = now.Sub(st.position)
		reason = lossReason(err, behind, r.behindLimit())
		err = describeLoss(reason, behind, err)
	}
	r.setError(err)
	r.subscribed.Store(false)
	r.probed.Store(false)
	r.updateUp()
	r.syncLost()
	clear(st.confirmed)
	st.attempts++
	switch {
	case st.subscribed:
		st.lostAt, st.lostReason = now, reason
		r.metrics.lost.WithLabelValues(reason).Inc()
		r.logLost(reason, behind, cause)
		st.downLogged = true
	case !st.downLogged:
		st.lostAt = time.Now()
		r.log.Warn("redis unreachable, retrying", "err", err)
		st.downLogged = true
	default:
		r.log.Debug("redis still unreachable", "err", err, "attempts", st.attempts)
	}
	st.subscribed = false
}

// probeLoop publishes a probe every interval (and when the reader asks after
// subscribing) until ctx ends, and keeps the up gauge current.
func (r *Redis) probeLoop(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	publishTimeout := min(r.timeout/2, max(r.interval, 250*time.Millisecond))
	for {
		r.updateUp()
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := r.client.Publish(pctx, r.probeChannel, strconv.FormatInt(time.Now().UnixNano(), 10)).Err()
		cancel()
		if err != nil && ctx.Err() == nil {
			r.setError(fmt.Errorf("probe publish: %w", err))
		}
		if err == nil {
			select {
			case r.answered <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

// ---- helpers ----

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// backoff is exponential with "equal jitter": the n-th delay is drawn from
// [d/2, d] where d doubles from 2*backoffMin, capped at 2*backoffMin<<7 and
// backoffMax, so every delay lies between backoffMin and backoffMax.
type backoff struct{ n int }

func (b *backoff) next() time.Duration {
	d := min(2*backoffMin<<min(b.n, 7), backoffMax)
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// wait waits out the next delay, or less: until early is signaled after
// the wait began (nil: never). A signal already pending is dropped: it
// says nothing of what failed since. It reports false if ctx ended first.
func (b *backoff) wait(ctx context.Context, early <-chan struct{}) bool {
	select {
	case <-early:
	default:
	}
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-early:
	}
	return true
}

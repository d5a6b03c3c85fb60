package broker

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// History on Redis: a Redis Function library (history.lua) does every
// append, read and hand-off step atomically, next to the data. The keys of
// channel C carry C as a hash tag, so a function touches only the slot of
// the key it declares (C) and runs unchanged on a Redis Cluster:
//
//	{C}:history   stream of entries "0-<seq>" (fields p: payload, e: event)
//	{C}:epoch     the stream's identity, renewed when the stream is new
//	{C}:received  hash epoch -> highest seq received (users only)
//	{C}:handoffs  hash "<epoch>:<seq>" -> "1": entries claimed (users only)

// Names of the library and its functions (the external contract names
// notify_publish; notify_spublish is its SPUBLISH twin for
// NOTIFY_SUBSCRIBE_MODE=sharded).
const (
	LibraryName      = "notify"
	LibraryVersion   = 2
	FunctionPublish  = "notify_publish"
	FunctionSPublish = "notify_spublish"
	FunctionRead     = "notify_read"
	FunctionVersion  = "notify_version"

	functionReceived = "notify_received"
	functionClaim    = "notify_claim"
)

//go:embed history.lua
var librarySource string

// Library returns the Lua library a node with cfg loads: history.lua with
// cfg's size and TTL baked in as the defaults of callers that pass none.
func Library(cfg HistoryConfig) string {
	return strings.NewReplacer(
		"__SIZE__", strconv.Itoa(cfg.Size),
		"__TTL_MS__", strconv.FormatInt(ttlMillis(cfg.TTL), 10),
	).Replace(librarySource)
}

func ttlMillis(d time.Duration) int64 { return max(1, d.Milliseconds()) }

var (
	_ History  = (*Redis)(nil)
	_ Handoffs = (*Redis)(nil)
)

// redisHistory is the Redis broker's history state.
type redisHistory struct {
	cfg     HistoryConfig
	library string // Library(cfg); "" when history is off
	size    string // cfg.Size, as sent with every append
	ttl     string // cfg.TTL in ms, as sent with every append
	recvTTL string // receivedTTL(cfg) in ms

	loadKick chan struct{} // asks Run's loader for a load
	loadGen  atomic.Uint64 // successful loads so far
	loadMu   chan struct{} // one load at a time (a channel: waiting honours ctx)
	// masterGen is, on a Cluster, loadGen right after the last load on each
	// master (by address); guarded by loadMu.
	masterGen map[string]uint64
}

func newRedisHistory(cfg HistoryConfig) *redisHistory {
	h := &redisHistory{cfg: cfg, loadKick: make(chan struct{}, 1), loadMu: make(chan struct{}, 1), masterGen: map[string]uint64{}}
	if cfg.Enabled() {
		h.library = Library(cfg)
		h.size = strconv.Itoa(cfg.Size)
		h.ttl = strconv.FormatInt(ttlMillis(cfg.TTL), 10)
		h.recvTTL = strconv.FormatInt(ttlMillis(receivedTTL(cfg)), 10)
	}
	return h
}

// Append runs notify_publish for each target, pipelined: each entry is
// appended, trimmed, given the TTL and published atomically. It returns the
// cursors in the order of targets. On an error some targets may have been
// appended (and published) already.
func (r *Redis) Append(ctx context.Context, targets []Target, payload []byte, event string) ([]Cursor, error) {
	if !r.hist.cfg.Enabled() {
		return nil, fmt.Errorf("append: %w", ErrHistoryOff)
	}
	channels, err := historyChannels(targets)
	if err != nil {
		return nil, err
	}
	cursors := make([]Cursor, len(targets))
	todo := make([]int, len(targets))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; ; attempt++ {
		gen := r.hist.loadGen.Load()
		again, err := r.appendCalls(ctx, channels, todo, payload, event, cursors)
		if err != nil {
			return nil, err
		}
		if len(again) == 0 {
			return cursors, nil
		}
		if attempt > 0 {
			return nil, fmt.Errorf("append: %s still missing after loading the library", r.publishFunction())
		}
		for _, i := range again { // on a Cluster, each on its own master
			if err := r.reload(ctx, channels[i], gen); err != nil {
				return nil, wrapErr("append: loading the history functions", err)
			}
		}
		todo = again
	}
}

// publishFunction is the history function that appends and publishes:
// notify_spublish when the channels are sharded, else notify_publish.
func (r *Redis) publishFunction() string {
	if r.mode == SubscribeSharded {
		return FunctionSPublish
	}
	return FunctionPublish
}

// appendCalls runs notify_publish for channels[i], i in todo, filling
// cursors. It returns the indexes whose call found the function missing,
// and the first other error, wrapped.
func (r *Redis) appendCalls(ctx context.Context, channels []string, todo []int, payload []byte, event string, cursors []Cursor) (again []int, err error) {
	h := r.hist
	if len(todo) == 1 {
		i := todo[0]
		cmd := r.client.FCall(ctx, r.publishFunction(), []string{channels[i]}, payload, event, h.size, h.ttl)
		if missingFunction(cmd.Err()) {
			return todo, nil
		}
		cursors[i], err = cursorReply(cmd)
		if err == nil {
			r.metrics.appends.Inc()
		}
		return nil, err
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.Cmd, len(todo))
	for k, i := range todo {
		cmds[k] = pipe.FCall(ctx, r.publishFunction(), []string{channels[i]}, payload, event, h.size, h.ttl)
	}
	_, _ = pipe.Exec(ctx) // each command keeps its own error
	var firstErr error
	for k, i := range todo {
		if missingFunction(cmds[k].Err()) {
			again = append(again, i)
			continue
		}
		c, err := cursorReply(cmds[k])
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		cursors[i] = c
		r.metrics.appends.Inc()
	}
	return again, firstErr
}

// cursorReply reads notify_publish's reply; its errors are wrapped.
func cursorReply(cmd *redis.Cmd) (Cursor, error) {
	s, err := cmd.Text()
	if err != nil {
		return Cursor{}, wrapErr("append", err)
	}
	c, err := ParseCursor(s)
	if err != nil || c.IsZero() {
		return Cursor{}, fmt.Errorf("append: %s returned %q, not a cursor", FunctionPublish, s)
	}
	return c, nil
}

// Read returns what t's stream holds after since, from one MULTI/EXEC of
// plain reads (so epoch, bounds and entries are consistent, in one round
// trip). It does what the library's notify_read does, at a fraction of
// Redis's CPU: a Lua function turns every entry into Lua tables and back
// (about 235us of Redis CPU for 100 entries here, against 31us for
// XRANGE). Only a cursor of another epoch, or past the newest entry, costs
// a second round trip (for all entries).
func (r *Redis) Read(ctx context.Context, t Target, since Cursor) (HistoryRead, error) {
	if !r.hist.cfg.Enabled() {
		return HistoryRead{}, fmt.Errorf("read history: %w", ErrHistoryOff)
	}
	ch, err := historyChannel(t)
	if err != nil {
		return HistoryRead{}, err
	}
	start := time.Now()
	s, err := r.readStream(ctx, ch, since)
	if err == nil && !since.IsZero() && s.epoch != "" && (s.epoch != since.Epoch || since.Seq > s.last) {
		s, err = r.readStream(ctx, ch, Cursor{}) // since is not of this history: all of it
		since = Cursor{}                         // and not recovered
	}
	if err != nil {
		return HistoryRead{}, err
	}
	hr := HistoryRead{Recovered: recoveredFrom(since, s.epoch, s.first, s.last)}
	if s.last > 0 {
		hr.Newest = Cursor{Epoch: s.epoch, Seq: s.last}
	}
	if len(s.entries) > 0 {
		hr.Entries = make([]Entry, 0, len(s.entries))
	}
	for _, x := range s.entries {
		e, err := streamEntry(s.epoch, x)
		if err != nil {
			return HistoryRead{}, fmt.Errorf("read history of %s: %w", ch, err)
		}
		hr.Entries = append(hr.Entries, e)
	}
	r.metrics.readSeconds.Observe(time.Since(start).Seconds())
	return hr, nil
}

// streamRead is one consistent look at a stream: its epoch ("" when there
// is none), the seqs of its first and last entry (0 when it is empty), and
// its entries after since (all of them when since is zero).
type streamRead struct {
	epoch       string
	first, last uint64
	entries     []redis.XMessage
}

func (r *Redis) readStream(ctx context.Context, ch string, since Cursor) (streamRead, error) {
	hist, ek := "{"+ch+"}:history", "{"+ch+"}:epoch"
	var epoch *redis.StringCmd
	var first, last, entries *redis.XMessageSliceCmd
	cmds, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		epoch = p.Get(ctx, ek)
		if since.IsZero() {
			entries = p.XRange(ctx, hist, "-", "+")
			return nil
		}
		first = p.XRangeN(ctx, hist, "-", "+", 1)
		last = p.XRevRangeN(ctx, hist, "+", "-", 1)
		entries = p.XRange(ctx, hist, "(0-"+strconv.FormatUint(since.Seq, 10), "+")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return streamRead{}, wrapErr("read history", err)
	}
	for _, c := range cmds { // Exec names only the first failure: GET's redis.Nil
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return streamRead{}, wrapErr("read history", err)
		}
	}
	s := streamRead{epoch: epoch.Val(), entries: entries.Val()}
	bounds := s.entries
	if first != nil {
		bounds = append(first.Val(), last.Val()...)
	}
	if s.epoch == "" || len(bounds) == 0 {
		return streamRead{}, nil // no stream (or an epoch without one: the next append renews both)
	}
	var err1, err2 error
	s.first, err1 = entrySeq(bounds[0].ID)
	s.last, err2 = entrySeq(bounds[len(bounds)-1].ID)
	if err := errors.Join(err1, err2); err != nil {
		return streamRead{}, fmt.Errorf("read history of %s: %w", ch, err)
	}
	return s, nil
}

// entrySeq reads the seq of a stream entry's id, "0-<seq>".
func entrySeq(id string) (uint64, error) {
	rest, ok := strings.CutPrefix(id, "0-")
	n, err := strconv.ParseUint(rest, 10, 64)
	if !ok || err != nil || n == 0 {
		return 0, fmt.Errorf("entry id %q is not 0-<seq>", id)
	}
	return n, nil
}

// streamEntry turns a stream entry into an Entry of epoch.
func streamEntry(epoch string, x redis.XMessage) (Entry, error) {
	seq, err := entrySeq(x.ID)
	if err != nil {
		return Entry{}, err
	}
	p, _ := x.Values["p"].(string)
	e, _ := x.Values["e"].(string)
	return Entry{Cursor: Cursor{Epoch: epoch, Seq: seq}, Payload: p, Event: e}, nil
}

// Received records, with notify_received, that user's connections received
// everything up to c. The record only moves forward and is kept
// receivedTTL (the larger of ReceivedTTL and the history TTL) after its
// last update.
func (r *Redis) Received(ctx context.Context, user string, c Cursor) error {
	if !r.hist.cfg.Enabled() {
		return fmt.Errorf("received: %w", ErrHistoryOff)
	}
	if err := checkEntry(user, c); err != nil {
		return err
	}
	err := r.fcall(ctx, false, functionReceived, UserChannel(user), c.Epoch, strconv.FormatUint(c.Seq, 10), r.hist.recvTTL).Err()
	if err != nil {
		return wrapErr("received", err)
	}
	return nil
}

// Claim asks notify_claim whether this caller hands off user's entry c.
func (r *Redis) Claim(ctx context.Context, user string, c Cursor, ttl time.Duration) (bool, error) {
	if !r.hist.cfg.Enabled() {
		return false, fmt.Errorf("claim: %w", ErrHistoryOff)
	}
	if err := checkEntry(user, c); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, errors.New("broker: claim with a TTL <= 0")
	}
	n, err := r.fcall(ctx, false, functionClaim, UserChannel(user), c.Epoch, strconv.FormatUint(c.Seq, 10), strconv.FormatInt(ttlMillis(ttl), 10)).Int()
	if err != nil {
		return false, wrapErr("claim", err)
	}
	return n == 1, nil
}

// fcall calls one function of the library on key; when the library is
// missing (a restarted or flushed server) it loads it and calls once more.
func (r *Redis) fcall(ctx context.Context, readOnly bool, fn, key string, args ...any) *redis.Cmd {
	call := func() *redis.Cmd {
		if readOnly {
			return r.client.FCallRO(ctx, fn, []string{key}, args...)
		}
		return r.client.FCall(ctx, fn, []string{key}, args...)
	}
	gen := r.hist.loadGen.Load()
	cmd := call()
	if !missingFunction(cmd.Err()) {
		return cmd
	}
	if err := r.reload(ctx, key, gen); err != nil {
		cmd.SetErr(fmt.Errorf("loading the history functions: %w", err))
		return cmd
	}
	return call()
}

// missingFunction: the server does not have the library (FUNCTION FLUSH, a
// restart or failover without persistence).
func missingFunction(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(rerr.Error(), "Function not found")
}

// reload loads the library after a call on key found it missing, unless a
// load succeeded since gen was read (one load answers a burst of such
// calls). On a Cluster it loads on key's master only, unless that master
// was loaded since gen: a master restarted without the library does not
// make the others' calls wait.
func (r *Redis) reload(ctx context.Context, key string, gen uint64) error {
	select {
	case r.hist.loadMu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.hist.loadMu }()
	if r.cluster != nil {
		return r.reloadMaster(ctx, key, gen)
	}
	if r.hist.loadGen.Load() != gen {
		return nil
	}
	return r.loadLocked(ctx, "a call found it missing")
}

// loadLibrary loads the library (FUNCTION LOAD REPLACE). Its errors, like
// reload's, are the client's, unwrapped.
func (r *Redis) loadLibrary(ctx context.Context, why string) error {
	select {
	case r.hist.loadMu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.hist.loadMu }()
	return r.loadLocked(ctx, why)
}

// loadLocked loads the library on the server, or on every master of a
// Cluster (FUNCTION LOAD goes to one node, and a Cluster does not replicate
// it between masters).
func (r *Redis) loadLocked(ctx context.Context, why string) error {
	if r.cluster != nil {
		return r.loadMasters(ctx, why)
	}
	if err := r.client.FunctionLoadReplace(ctx, r.hist.library).Err(); err != nil {
		return err
	}
	r.loaded(why, "")
	return nil
}

// loaded records a load: on the Cluster master addr, or on the server when
// addr is "". The caller holds loadMu.
func (r *Redis) loaded(why, addr string) {
	gen := r.hist.loadGen.Add(1)
	log := r.log
	if addr != "" {
		r.hist.masterGen[addr] = gen
		log = log.With("master", addr)
	}
	r.metrics.functionLoads.Inc()
	log.Info("redis history functions loaded", "library", LibraryName, "version", LibraryVersion, "why", why,
		"size", r.hist.cfg.Size, "ttl", r.hist.cfg.TTL)
}

// kickLoad asks Run's loader for a load (coalesced).
func (r *Redis) kickLoad() {
	if !r.hist.cfg.Enabled() {
		return
	}
	select {
	case r.hist.loadKick <- struct{}{}:
	default:
	}
}

// Loader retry bounds: a failed load (Redis up but refusing, e.g. an old
// server without FUNCTION) is retried, ever more slowly.
const (
	loadRetryMin = 100 * time.Millisecond
	loadRetryMax = 30 * time.Second
)

// loadLoop loads the library whenever asked (the start of Run, every
// subscription completed) until ctx ends, retrying a failed load.
func (r *Redis) loadLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	failures := 0
	for {
		why := "run start or (re)subscribed"
		select {
		case <-ctx.Done():
			return
		case <-r.hist.loadKick:
		case <-timer.C:
			why = "retry"
		}
		lctx, cancel := context.WithTimeout(ctx, r.timeout)
		err := r.loadLibrary(lctx, why)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			timer.Stop()
			continue
		}
		level := r.log.Debug
		if failures == 0 {
			level = r.log.Warn
		}
		level("loading the redis history functions failed", "err", err)
		timer.Reset(min(loadRetryMin<<min(failures, 9), loadRetryMax))
		failures++
	}
}

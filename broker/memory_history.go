package broker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// History in memory, with the semantics of the Redis library: a ring of
// HistoryConfig.Size entries per stream, an epoch drawn at random whenever a
// stream is (re)created, the stream gone TTL after its last append. Expiry
// is checked on every access and swept, so that memory stays bounded: in
// full once the writes since the last sweep outnumber what is kept (O(1)
// amortised per write), and from Run's goroutine every sweepEvery.

var (
	_ History  = (*Memory)(nil)
	_ Handoffs = (*Memory)(nil)
)

// memHistory is the Memory broker's history; guarded by Memory.histMu.
type memHistory struct {
	cfg      HistoryConfig
	streams  map[string]*memStream   // channel -> stream
	received map[string]*memReceived // user id -> what its connections received
	claims   map[string]*memClaims   // user id -> entries claimed
	writes   int                     // since the last sweep
	sweepAt  int                     // writes that trigger the next sweep
}

// memStream is one stream: its last len(ring) entries, oldest at start once
// the ring is full.
type memStream struct {
	epoch   string
	seq     uint64 // of the newest entry
	ring    []Entry
	start   int
	expires time.Time
}

type memReceived struct {
	seqs    map[string]uint64 // epoch -> highest seq received
	expires time.Time
}

type memClaims struct {
	entries map[Cursor]struct{}
	expires time.Time
}

func newMemHistory(cfg HistoryConfig) memHistory {
	return memHistory{
		cfg:      cfg,
		streams:  make(map[string]*memStream),
		received: make(map[string]*memReceived),
		claims:   make(map[string]*memClaims),
		sweepAt:  minSweepWrites,
	}
}

// minSweepWrites spares small maps a sweep on every write.
const minSweepWrites = 64

// sweepEvery is how often Run sweeps: often enough that a stream's memory is
// released soon after its TTL, rarely enough to cost nothing.
func (h *memHistory) sweepEvery() time.Duration {
	return min(max(h.cfg.TTL, 100*time.Millisecond), time.Minute)
}

// Append adds payload to the stream of each target and hands it to the
// running Run's handler (with its cursor and event), as one batch: no other
// publish is delivered between them. With no Run running the entries are
// kept but delivered to nobody, as on Redis.
func (m *Memory) Append(ctx context.Context, targets []Target, payload []byte, event string) ([]Cursor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !m.hist.cfg.Enabled() {
		return nil, fmt.Errorf("append: %w", ErrHistoryOff)
	}
	channels, err := historyChannels(targets)
	if err != nil {
		return nil, err
	}
	p := string(payload)
	cursors := make([]Cursor, len(targets))
	m.deliverMu.Lock() // first: deliveries in the order of the cursors
	defer m.deliverMu.Unlock()
	now := time.Now()
	m.histMu.Lock()
	for i, ch := range channels {
		cursors[i] = m.hist.append(ch, p, event, now)
	}
	m.histMu.Unlock()
	m.metrics.appends.Add(float64(len(targets)))
	if m.handler != nil {
		for i, t := range targets {
			m.handler.Deliver(t, Message{Payload: p, Cursor: cursors[i], Event: event})
		}
	}
	m.flush()
	return cursors, nil
}

func (h *memHistory) append(ch, payload, event string, now time.Time) Cursor {
	s := h.streams[ch]
	if s != nil && !now.Before(s.expires) {
		s = h.renew(ch, s.epoch)
	} else if s == nil {
		s = h.renew(ch, "")
	}
	s.seq++
	c := Cursor{Epoch: s.epoch, Seq: s.seq}
	e := Entry{Cursor: c, Payload: payload, Event: event}
	if len(s.ring) < h.cfg.Size {
		s.ring = append(s.ring, e)
	} else {
		s.ring[s.start] = e
		s.start = (s.start + 1) % len(s.ring)
	}
	s.expires = now.Add(h.cfg.TTL)
	h.wrote(now)
	return c
}

// renew creates ch's stream with a new epoch (not old, the epoch of the
// stream it replaces).
func (h *memHistory) renew(ch, old string) *memStream {
	epoch := old
	for epoch == old || epoch == OriginEpoch {
		epoch = strconv.FormatUint(rand.Uint64(), 36)
	}
	s := &memStream{epoch: epoch}
	h.streams[ch] = s
	return s
}

// stream returns ch's stream; nil when there is none or it expired.
func (h *memHistory) stream(ch string, now time.Time) *memStream {
	s := h.streams[ch]
	if s != nil && !now.Before(s.expires) {
		delete(h.streams, ch)
		return nil
	}
	return s
}

// wrote counts a write and sweeps once the writes since the last sweep
// reach what that sweep kept: the maps never hold more than twice what was
// live at the last sweep (or minSweepWrites more), and a sweep visits at
// most twice as many entries as there were writes since the previous one:
// O(1) per write.
func (h *memHistory) wrote(now time.Time) {
	h.writes++
	if h.writes >= h.sweepAt {
		h.sweep(now)
	}
}

// sweep drops everything expired.
func (h *memHistory) sweep(now time.Time) {
	defer func() {
		h.writes = 0
		h.sweepAt = max(minSweepWrites, len(h.streams)+len(h.received)+len(h.claims))
	}()
	for ch, s := range h.streams {
		if !now.Before(s.expires) {
			delete(h.streams, ch)
		}
	}
	for u, r := range h.received {
		if !now.Before(r.expires) {
			delete(h.received, u)
		}
	}
	for u, c := range h.claims {
		if !now.Before(c.expires) {
			delete(h.claims, u)
		}
	}
}

// sweepHistory is Run's periodic sweep.
func (m *Memory) sweepHistory(now time.Time) {
	m.histMu.Lock()
	m.hist.sweep(now)
	m.histMu.Unlock()
}

// Read returns what t's stream holds after since.
func (m *Memory) Read(ctx context.Context, t Target, since Cursor) (HistoryRead, error) {
	if err := ctx.Err(); err != nil {
		return HistoryRead{}, err
	}
	if !m.hist.cfg.Enabled() {
		return HistoryRead{}, fmt.Errorf("read history: %w", ErrHistoryOff)
	}
	ch, err := historyChannel(t)
	if err != nil {
		return HistoryRead{}, err
	}
	start := time.Now()
	m.histMu.Lock()
	hr := m.hist.read(ch, since, start)
	m.histMu.Unlock()
	m.metrics.readSeconds.Observe(time.Since(start).Seconds())
	return hr, nil
}

func (h *memHistory) read(ch string, since Cursor, now time.Time) HistoryRead {
	s := h.stream(ch, now)
	if s == nil || len(s.ring) == 0 {
		return HistoryRead{}
	}
	first := s.ring[s.start].Cursor.Seq
	hr := HistoryRead{
		Newest:    Cursor{Epoch: s.epoch, Seq: s.seq},
		Recovered: recoveredFrom(since, s.epoch, first, s.seq),
	}
	after := uint64(0) // every entry
	if since.Epoch == s.epoch && since.Seq <= s.seq {
		after = since.Seq
	}
	n := len(s.ring)
	for i := range n {
		e := s.ring[(s.start+i)%n]
		if e.Cursor.Seq > after {
			hr.Entries = append(hr.Entries, e)
		}
	}
	return hr
}

// Received records that user's connections received everything up to c;
// the record only moves forward and is kept receivedTTL after its last
// update.
func (m *Memory) Received(ctx context.Context, user string, c Cursor) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !m.hist.cfg.Enabled() {
		return fmt.Errorf("received: %w", ErrHistoryOff)
	}
	if err := checkEntry(user, c); err != nil {
		return err
	}
	now := time.Now()
	m.histMu.Lock()
	defer m.histMu.Unlock()
	h := &m.hist
	r := h.received[user]
	if r == nil || !now.Before(r.expires) {
		r = &memReceived{seqs: make(map[string]uint64, 1)}
		h.received[user] = r
	}
	if c.Seq > r.seqs[c.Epoch] {
		r.seqs[c.Epoch] = c.Seq
	}
	if len(r.seqs) > 2 { // as the library: keep this epoch and the stream's
		var current string
		if s := h.stream(UserChannel(user), now); s != nil {
			current = s.epoch
		}
		for e := range r.seqs {
			if e != c.Epoch && e != current {
				delete(r.seqs, e)
			}
		}
	}
	r.expires = later(r.expires, now.Add(receivedTTL(h.cfg)))
	h.wrote(now)
	return nil
}

// Claim reports whether this caller hands off user's entry c: true once
// per entry (within ttl), false when Received covers it.
func (m *Memory) Claim(ctx context.Context, user string, c Cursor, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if !m.hist.cfg.Enabled() {
		return false, fmt.Errorf("claim: %w", ErrHistoryOff)
	}
	if err := checkEntry(user, c); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("broker: claim with a TTL <= 0")
	}
	now := time.Now()
	m.histMu.Lock()
	defer m.histMu.Unlock()
	h := &m.hist
	if r := h.received[user]; r != nil && now.Before(r.expires) && c.Seq <= r.seqs[c.Epoch] {
		return false, nil
	}
	cl := h.claims[user]
	if cl == nil || !now.Before(cl.expires) {
		cl = &memClaims{entries: make(map[Cursor]struct{}, 1)}
		h.claims[user] = cl
	}
	if _, claimed := cl.entries[c]; claimed {
		return false, nil
	}
	cl.entries[c] = struct{}{}
	cl.expires = later(cl.expires, now.Add(ttl))
	h.wrote(now)
	return true, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

package admission

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/node/internal/respond"
)

// History is what admission needs of the broker's history (broker.Redis
// and broker.Memory implement it).
type History interface {
	// Read returns what a stream holds after since.
	Read(ctx context.Context, t broker.Target, since broker.Cursor) (broker.HistoryRead, error)
	// Newest returns a stream's newest cursor (zero when it is empty).
	Newest(ctx context.Context, t broker.Target) (broker.Cursor, error)
	// Sync returns once every message published before the call has been
	// handed to the broker's handler: after it, nothing read from the
	// history can still arrive live.
	Sync(ctx context.Context) error
}

// Since is where a client asks to resume one stream.
type Since struct {
	Cursor broker.Cursor
	Asked  bool // a cursor was given ("" included: the client wants cursors from now on)
}

// Resume is where a client asks to resume its streams: its user's and
// those of the topics it joins.
type Resume struct {
	User   Since
	Topics map[string]Since
	// Track: the client tracks cursors (envelope frames, event ids), so its
	// state frame carries where its streams stand, and its messages must
	// follow that without a repeat. A client that neither tracks nor
	// resumes pays nothing for history.
	Track bool
}

// Reads reports whether the connect reads the client's history.
func (r Resume) Reads() bool { return r.Track || r.Asked() }

// Asked reports whether the client named any cursor.
func (r Resume) Asked() bool {
	if r.User.Asked {
		return true
	}
	for _, s := range r.Topics {
		if s.Asked {
			return true
		}
	}
	return false
}

// SinceParam and TopicSincePrefix name the query parameters of a resume:
// ?since=<cursor> for the user's stream, ?since.<topic>=<cursor> for a
// joined topic's.
const (
	SinceParam       = "since"
	TopicSincePrefix = "since."
)

// ParseResume reads the cursors a request names for its user's stream and
// the topics it joins. A cursor that cannot be read, or one for a topic not
// joined, is an error for the client.
func ParseResume(r *http.Request, topics []string) (Resume, error) {
	q := Query(r)
	res := Resume{Topics: map[string]Since{}}
	for key, vals := range q {
		switch name, isTopic := strings.CutPrefix(key, TopicSincePrefix); {
		case key == SinceParam:
			c, err := broker.ParseCursor(vals[0])
			if err != nil {
				return Resume{}, fmt.Errorf("since %s: %w", respond.Quote(vals[0]), err)
			}
			res.User = Since{Cursor: c, Asked: true}
		case isTopic:
			if !slices.Contains(topics, name) {
				return Resume{}, fmt.Errorf("%s names a topic not joined", respond.Quote(key))
			}
			c, err := broker.ParseCursor(vals[0])
			if err != nil {
				return Resume{}, fmt.Errorf("%s %s: %w", key, respond.Quote(vals[0]), err)
			}
			res.Topics[name] = Since{Cursor: c, Asked: true}
		}
	}
	return res, nil
}

// Stream is what a connect found of one stream.
type Stream struct {
	Newest    broker.Cursor  // zero: the stream is empty, or its history could not be read
	Asked     bool           // the client named a cursor
	Recovered bool           // with Asked: Entries are exactly what came after it
	Entries   []broker.Entry // with Asked: what the client missed (or, not recovered, what is left)
}

// Tail returns the newest entries that fit in limit bytes of payload: a
// client never gets a replay beyond its send queue. When it cuts, the
// stream is marked not recovered: the client reloads instead.
func (st *Stream) Tail(limit int) []broker.Entry {
	size, from := 0, len(st.Entries)
	for from > 0 && size+len(st.Entries[from-1].Payload) <= limit {
		from--
		size += len(st.Entries[from].Payload)
	}
	if from > 0 {
		st.Recovered = false
	}
	return st.Entries[from:]
}

// Snapshot is what a client gets before live messages: its state and, with
// history on, where each of its streams stands.
type Snapshot struct {
	State   map[string]string
	History bool // history is on: the streams below were read
	User    Stream
	Topics  map[string]*Stream
}

// NewestOf is the newest cursor read of a stream (zero when none was), the
// fence a hub.Hold drops replayed messages by.
func (s *Snapshot) NewestOf(topic bool, name string) broker.Cursor {
	if !topic {
		return s.User.Newest
	}
	if t := s.Topics[name]; t != nil {
		return t.Newest
	}
	return broker.Cursor{}
}

// recoveryMetrics count the resumes by result.
type recoveryMetrics struct {
	recovered, gap prometheus.Counter
}

func newRecoveryMetrics(reg prometheus.Registerer) (*recoveryMetrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_history_recoveries_total",
		Help: "Streams a client resumed from a cursor, by result: recovered (nothing missed) or gap (the history no longer reached back).",
	}, []string{"result"})
	m := &recoveryMetrics{recovered: vec.WithLabelValues("recovered"), gap: vec.WithLabelValues("gap")}
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ReadSnapshot reads the user's state and, with history on, its streams
// (entries after each cursor asked, the newest cursor of the others), then
// waits until nothing read can still arrive live (History.Sync). The client
// is registered before it is called, so nothing published meanwhile is
// lost.
//
// Without a cursor asked, a state that cannot be read is an error (the
// handshake is refused, as without history). With one, a read that fails
// or times out gives an empty state and recovered false: the client reloads
// from its own backend, as after any gap, and nothing hangs.
func (p *Pipeline) ReadSnapshot(ctx context.Context, user string, topics []string, res Resume) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, StateReadTimeout)
	defer cancel()
	if err := p.awaitSubscribed(ctx, user, topics); err != nil {
		return nil, err
	}
	snap := &Snapshot{Topics: map[string]*Stream{}}
	var err error
	if snap.State, err = p.cfg.State.GetState(ctx, user); err != nil && !res.Asked() {
		return nil, err
	}
	if snap.State == nil {
		snap.State = map[string]string{}
	}
	if p.cfg.History == nil || !res.Reads() {
		return snap, nil
	}
	snap.History = true
	herr := p.readStream(ctx, &snap.User, broker.Target{Name: user}, res.User)
	for _, t := range topics {
		st := &Stream{}
		snap.Topics[t] = st
		herr = firstErr(herr, p.readStream(ctx, st, broker.Target{Topic: true, Name: t}, res.Topics[t]))
	}
	if herr == nil {
		herr = p.cfg.History.Sync(ctx)
	}
	if herr != nil || err != nil {
		// What was read may be incomplete: nobody is told it recovered.
		p.log.Warn("history read failed; the client is told it did not recover", "user", user, "err", firstErr(err, herr))
		snap.User.Recovered = false
		for _, st := range snap.Topics {
			st.Recovered = false
		}
	} else if snap.User.Asked {
		p.received(ctx, user, snap.User.Newest)
	}
	p.countRecoveries(snap)
	return snap, nil
}

// awaitSubscribed waits until the user's and the topics' channels are
// subscribed (NOTIFY_SUBSCRIBE_MODE=user): what is published after the
// snapshot is read must reach the client.
func (p *Pipeline) awaitSubscribed(ctx context.Context, user string, topics []string) error {
	if p.cfg.Subscriptions == nil {
		return nil
	}
	targets := make([]broker.Target, 0, 1+len(topics))
	targets = append(targets, broker.Target{Name: user})
	for _, t := range topics {
		targets = append(targets, broker.Target{Topic: true, Name: t})
	}
	return p.cfg.Subscriptions.Await(ctx, targets...)
}

// AwaitsSubscriptions reports whether a join must wait for its channel's
// subscription (AwaitSubscribed) before it replies.
func (p *Pipeline) AwaitsSubscriptions() bool { return p.cfg.Subscriptions != nil }

// AwaitSubscribed waits until t's channel is subscribed; at once when the
// broker subscribes to every channel.
func (p *Pipeline) AwaitSubscribed(ctx context.Context, t broker.Target) error {
	if p.cfg.Subscriptions == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, StateReadTimeout)
	defer cancel()
	return p.cfg.Subscriptions.Await(ctx, t)
}

// ReadStream reads one stream for a client that joins it after it
// connected (a Phoenix join): what it holds after s, or only its newest
// cursor when s asks for nothing, then waits as ReadSnapshot does. A
// failure is logged and gives a stream not recovered.
func (p *Pipeline) ReadStream(ctx context.Context, t broker.Target, s Since) *Stream {
	ctx, cancel := context.WithTimeout(ctx, StateReadTimeout)
	defer cancel()
	st := &Stream{}
	err := p.readStream(ctx, st, t, s)
	if err == nil {
		err = p.cfg.History.Sync(ctx)
	}
	if err != nil {
		p.log.Warn("history read failed; the client is told it did not recover", "stream", t.Name, "topic", t.Topic, "err", err)
		st.Recovered = false
	} else if !t.Topic && s.Asked {
		p.received(ctx, t.Name, st.Newest)
	}
	p.countRecoveries(&Snapshot{User: *st})
	return st
}

// received tells the hand-off that a resume of user's stream delivers every
// entry up to newest (the replay, or what the client had).
func (p *Pipeline) received(ctx context.Context, user string, newest broker.Cursor) {
	if p.cfg.Receiver != nil && !newest.IsZero() {
		p.cfg.Receiver.Received(ctx, user, newest)
	}
}

// HistoryOn reports whether history is kept.
func (p *Pipeline) HistoryOn() bool { return p.cfg.History != nil }

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (p *Pipeline) readStream(ctx context.Context, st *Stream, t broker.Target, s Since) error {
	st.Asked = s.Asked
	now := time.Now()
	defer func() {
		if st.Newest.IsZero() {
			// An empty stream still has a place to resume from.
			st.Newest = broker.OriginAt(now)
		}
	}()
	if !s.Asked {
		c, err := p.cfg.History.Newest(ctx, t)
		st.Newest = c
		return err
	}
	since := s.Cursor
	if since.IsOrigin() {
		since = broker.Cursor{} // every entry the stream has
	}
	hr, err := p.cfg.History.Read(ctx, t, since)
	if err != nil {
		return err
	}
	st.Newest, st.Recovered, st.Entries = hr.Newest, hr.Recovered, hr.Entries
	switch {
	case s.Cursor.IsZero():
		// "since=" (empty): the client wants cursors from now on, and
		// missed nothing it could have known of.
		st.Recovered, st.Entries = true, nil
	case s.Cursor.IsOrigin():
		// The stream was empty when the client read it: everything it holds
		// now came after, and nothing is missing if the stream kept its
		// first entry and no earlier stream can have come and expired.
		taken := time.UnixMilli(int64(s.Cursor.Seq))
		st.Recovered = (len(hr.Entries) == 0 || hr.Entries[0].Cursor.Seq == 1) && now.Sub(taken) < p.cfg.HistoryTTL
	}
	return nil
}

func (p *Pipeline) countRecoveries(snap *Snapshot) {
	for _, st := range append([]*Stream{&snap.User}, mapValues(snap.Topics)...) {
		switch {
		case !st.Asked:
		case st.Recovered:
			p.recoveries.recovered.Inc()
		default:
			p.recoveries.gap.Inc()
		}
	}
}

func mapValues(m map[string]*Stream) []*Stream {
	out := make([]*Stream, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

package broker

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Memory is an in-process Broker and StateStore with the semantics of the
// Redis one, for development (no Redis configured) and for tests of higher
// layers.
//
// Publish calls the handler of the running Run synchronously, under a mutex:
// a message on a user's or topic's channel goes to Deliver, one on
// ControlChannel to Control, any other is dropped, as the Redis subscription
// would. Deliveries are serialised in publish order across goroutines, and
// Publish returns after the handler ran. A message published while no Run is
// running is lost, as with Redis pub/sub without a subscriber. Append does the
// same with a cursor and event, after keeping the message in history (see
// memory_history.go). The handler must therefore not call Publish,
// PublishMany or Append (it would deadlock); Read, Received and Claim are fine.
type Memory struct {
	metrics *metrics
	running atomic.Bool

	deliverMu sync.Mutex
	handler   Handler // of the running Run; nil when none; guarded by deliverMu

	stateMu sync.Mutex
	state   map[string]map[string]string // user id -> fields; guarded by stateMu

	histMu sync.Mutex // taken after deliverMu when both are held
	hist   memHistory // guarded by histMu (hist.cfg is immutable)
}

var (
	_ Broker     = (*Memory)(nil)
	_ StateStore = (*Memory)(nil)
)

// Errors shared by the implementations.
var (
	errNotRunning     = errors.New("broker not running")
	errAlreadyRunning = errors.New("broker: Run is already running")
	errNilHandler     = errors.New("broker: nil handler")
)

// NewMemory returns an in-memory broker whose metrics are registered on reg
// (nil: not registered), keeping history as history says (Size 0: off).
// It panics if reg refuses the metrics, like prometheus.MustRegister, and on
// a history setting out of range (a negative size, a TTL under 1ms).
func NewMemory(reg prometheus.Registerer, history HistoryConfig) *Memory {
	if err := checkHistory(history); err != nil {
		panic(err.Error())
	}
	m, err := newMetrics(reg)
	if err != nil {
		panic("broker: registering metrics: " + err.Error())
	}
	return &Memory{metrics: m, state: make(map[string]map[string]string), hist: newMemHistory(history)}
}

// Run installs h as the receiver of published messages until ctx ends, then
// returns nil. Only one Run may run at a time. Once Run has returned, h is not
// called any more.
func (m *Memory) Run(ctx context.Context, h Handler) error {
	if h == nil {
		return errNilHandler
	}
	m.deliverMu.Lock()
	if m.handler != nil {
		m.deliverMu.Unlock()
		return errAlreadyRunning
	}
	m.handler = h
	m.running.Store(true)
	m.metrics.setUp(true)
	m.deliverMu.Unlock()

	if m.hist.cfg.Enabled() {
		t := time.NewTicker(m.hist.sweepEvery())
		defer t.Stop()
		for done := false; !done; {
			select {
			case <-ctx.Done():
				done = true
			case now := <-t.C:
				m.sweepHistory(now)
			}
		}
	} else {
		<-ctx.Done()
	}

	m.deliverMu.Lock() // waits for a delivery in progress
	m.handler = nil
	m.running.Store(false)
	m.metrics.setUp(false)
	m.deliverMu.Unlock()
	return nil
}

// Ready returns nil while Run is running.
func (m *Memory) Ready() error {
	if m.running.Load() {
		return nil
	}
	return errNotRunning
}

// Publish hands payload to the running Run's handler: to Deliver when
// channel matches UserPattern or TopicPattern, to Control when it is
// ControlChannel; other channels are dropped silently.
func (m *Memory) Publish(ctx context.Context, channel string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.deliverMu.Lock()
	defer m.deliverMu.Unlock()
	m.deliver(channel, string(payload))
	m.flush()
	return nil
}

// flush ends a delivery (Flusher). deliverMu must be held.
func (m *Memory) flush() {
	if m.handler != nil {
		flush(m.handler)
	}
}

// PublishMany publishes payload on every channel, in order, as one batch: no
// other publish is delivered between them.
func (m *Memory) PublishMany(ctx context.Context, channels []string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(channels) == 0 {
		return nil
	}
	m.deliverMu.Lock()
	defer m.deliverMu.Unlock()
	if m.handler == nil {
		return nil
	}
	p := string(payload)
	for _, ch := range channels {
		m.deliver(ch, p)
	}
	m.flush()
	return nil
}

// deliver hands one message to the handler the way the Redis subscription
// does: ControlChannel to Control, a channel UserPattern or TopicPattern
// matches to Deliver, any other channel to nobody. deliverMu must be held.
func (m *Memory) deliver(channel, payload string) {
	if m.handler == nil {
		return
	}
	if channel == ControlChannel {
		m.handler.Control(payload)
		return
	}
	// ParseChannel accepts exactly the channels the two "prefix*" patterns match.
	if t, ok := ParseChannel(channel); ok {
		m.handler.Deliver(t, decodeMessage(payload))
	}
}

// GetState returns a copy of the user's fields; an empty map when none.
func (m *Memory) GetState(ctx context.Context, userID string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	s := m.state[userID]
	out := make(map[string]string, len(s))
	maps.Copy(out, s)
	return out, nil
}

// SetState merges fields into the user's state.
func (m *Memory) SetState(ctx context.Context, userID string, fields map[string]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(fields) == 0 {
		return nil
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	s := m.state[userID]
	if s == nil {
		s = make(map[string]string, len(fields))
		m.state[userID] = s
	}
	maps.Copy(s, fields)
	return nil
}

// DeleteState removes the named fields, or the whole state when none are
// named. Like a Redis hash, a state left without fields is gone.
func (m *Memory) DeleteState(ctx context.Context, userID string, fields ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	if len(fields) == 0 {
		delete(m.state, userID)
		return nil
	}
	s := m.state[userID]
	for _, f := range fields {
		delete(s, f)
	}
	if len(s) == 0 {
		delete(m.state, userID)
	}
	return nil
}

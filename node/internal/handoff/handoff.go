// Package handoff hands the application, through a webhook, the messages
// with history that reached a user with no connection anywhere and that the
// user did not get within a grace period (it did not connect and resume).
// That is how an application sends a push notification or an email
// instead.
//
// The user's owner decides: all of a user's connections live on its owner,
// so a message for a user its owner has no connection of is undelivered.
// When the grace ends the owner claims the message through the broker,
// which says no when any node recorded that the user got it (a resume, or
// a live delivery on a node that does not own the user) and yes exactly once
// across the cluster; then the message is posted, batched and signed, with
// retries.
package handoff

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/broker"
)

// Owners says whether this node owns a user (placement).
type Owners interface {
	Owns(user string) bool
}

// Config of a Handoff.
type Config struct {
	Webhook  string        // NOTIFY_UNDELIVERED_WEBHOOK
	Secret   string        // NOTIFY_WEBHOOK_SECRET
	Grace    time.Duration // NOTIFY_UNDELIVERED_GRACE
	NodeName string
	Owners   Owners
	Broker   broker.Handoffs
	// Queue bounds the messages waiting (for their grace or to be sent);
	// beyond it the oldest are dropped, counted. Default 10000.
	Queue      int
	Client     *http.Client // default: 10 s timeout
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Handoff watches deliveries and hands off what nobody received.
type Handoff struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	waiting []*entry            // in grace, oldest first (the grace is one for all)
	byUser  map[string][]*entry // the same, per user, to cancel on a resume
	seen    []seen              // live deliveries on a non-owner, to record (Received)
	wake    chan struct{}       // size 1: seen has work

	out *sender
}

// entry is a message in its grace.
type entry struct {
	user     string
	msg      broker.Message
	deadline time.Time
	done     bool // received or dropped: skip it
}

type seen struct {
	user   string
	cursor broker.Cursor
}

// New returns a Handoff; Run runs it.
func New(cfg Config) (*Handoff, error) {
	if cfg.Webhook == "" || cfg.Owners == nil || cfg.Broker == nil || cfg.Grace <= 0 {
		return nil, errors.New("handoff: webhook, owners, broker and grace are required")
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 10000
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h := &Handoff{cfg: cfg, log: cfg.Logger.With("component", "handoff"), metrics: m,
		byUser: map[string][]*entry{}, wake: make(chan struct{}, 1)}
	h.out = newSender(cfg, h.log, m)
	return h, nil
}

// Delivered is told, by the hub, of every message with history for a user
// and how many local connections took it. It never blocks: it runs on the
// broker's reader. user and m.Payload are the broker's (broker.Handler):
// what is kept is copied.
func (h *Handoff) Delivered(user string, m broker.Message, took int) {
	switch owns := h.cfg.Owners.Owns(user); {
	case took == 0 && owns:
		h.track(strings.Clone(user), m.Clone())
	case took > 0 && !owns:
		// The owner may count the user as offline: tell it, through the
		// broker, that the user got this one.
		h.mu.Lock()
		if len(h.seen) < h.cfg.Queue {
			h.seen = append(h.seen, seen{strings.Clone(user), m.Cursor})
		}
		h.mu.Unlock()
		signal(h.wake)
	}
}

func (h *Handoff) track(user string, m broker.Message) {
	e := &entry{user: user, msg: m, deadline: time.Now().Add(h.cfg.Grace)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.waiting) >= h.cfg.Queue {
		old := h.waiting[0]
		h.waiting = h.waiting[1:]
		h.forgetLocked(old)
		h.metrics.dropped.Inc()
	}
	h.waiting = append(h.waiting, e)
	h.byUser[user] = append(h.byUser[user], e)
}

func (h *Handoff) forgetLocked(e *entry) {
	e.done = true
	es := h.byUser[e.user]
	for i, x := range es {
		if x == e {
			es = append(es[:i:i], es[i+1:]...)
			break
		}
	}
	if len(es) == 0 {
		delete(h.byUser, e.user)
	} else {
		h.byUser[e.user] = es
	}
}

// Received is told that a connection of user got every entry of its stream
// up to c (a resume): what waits for it here is not handed off, and the
// broker records it for the other nodes (that call may wait for Redis; it
// runs on the resuming connection's handshake, not on the broker's reader).
func (h *Handoff) Received(ctx context.Context, user string, c broker.Cursor) {
	if c.IsZero() {
		return
	}
	h.mu.Lock()
	for _, e := range append([]*entry(nil), h.byUser[user]...) {
		if e.msg.Cursor.Epoch == c.Epoch && e.msg.Cursor.Seq <= c.Seq {
			h.forgetLocked(e)
		}
	}
	h.mu.Unlock()
	if err := h.cfg.Broker.Received(ctx, user, c); err != nil {
		h.log.Warn("cannot record a resume for the hand-off", "user", user, "err", err)
	}
}

// stopFlush bounds what a stopping node spends handing off what it holds.
const stopFlush = 5 * time.Second

// Run hands off what is due, records what other nodes' deliveries saw, and
// sends, until ctx ends. Then it hands off at once what is still in its
// grace, rather than lose it with the process (a deploy restarts every
// node), within stopFlush.
func (h *Handoff) Run(ctx context.Context) error {
	sctx, stopSending := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.out.run(sctx) })
	defer wg.Wait()
	defer stopSending()
	tick := time.NewTicker(min(h.cfg.Grace/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), stopFlush)
			defer cancel()
			h.recordSeen(fctx)
			h.due(fctx, time.Now().Add(h.cfg.Grace))
			h.out.flush(fctx)
			return nil
		case <-h.wake:
			h.recordSeen(ctx)
		case now := <-tick.C:
			h.recordSeen(ctx)
			h.due(ctx, now)
		}
	}
}

func (h *Handoff) recordSeen(ctx context.Context) {
	h.mu.Lock()
	batch := h.seen
	h.seen = nil
	h.mu.Unlock()
	for _, s := range batch {
		if err := h.cfg.Broker.Received(ctx, s.user, s.cursor); err != nil && ctx.Err() == nil {
			h.log.Warn("cannot record a delivery for the hand-off", "user", s.user, "err", err)
		}
	}
}

// due claims the messages whose grace ended, and queues those this node
// won for the webhook.
func (h *Handoff) due(ctx context.Context, now time.Time) {
	h.mu.Lock()
	var ready []*entry
	for len(h.waiting) > 0 && !h.waiting[0].deadline.After(now) {
		e := h.waiting[0]
		h.waiting = h.waiting[1:]
		if !e.done {
			h.forgetLocked(e)
			ready = append(ready, e)
		}
	}
	h.mu.Unlock()
	for _, e := range ready {
		ok, err := h.cfg.Broker.Claim(ctx, e.user, e.msg.Cursor, 3*h.cfg.Grace)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				h.metrics.failed.Inc()
				h.log.Warn("cannot claim an undelivered message; not handed off", "user", e.user, "cursor", e.msg.Cursor.String(), "err", err)
			}
		case ok:
			h.out.enqueue(e.user, e.msg)
		}
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

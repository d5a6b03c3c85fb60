// Package phoenix serves Phoenix Channels (phoenix.js 1.x and its Swift,
// Kotlin, Dart and C# ports) as the Elixir notifications-service did:
// topics user:<id> (the token's user; the join reply carries the state
// object), group:<name> (when the token grants it) and ping, over a
// WebSocket (/pubsub/websocket) and over long-polling (/pubsub/longpoll).
// The protocol (socket.go) is shared by both; an output is what differs.
package phoenix

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/internal/service"
	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/node/internal/respond"
	"github.com/notify-dev/notify/transport"
)

// RequestRelay relays a plain request to the user's owner (placement).
type RequestRelay interface {
	RelayRequestToOwner(w http.ResponseWriter, r *http.Request, user string, body []byte) bool
}

// Config of an Endpoint.
type Config struct {
	Accept         *admission.Pipeline
	Hub            *hub.Hub
	Transport      *transport.Server
	State          broker.StateStore
	Relay          RequestRelay
	SendQueueBytes int           // NOTIFY_SEND_QUEUE_BYTES: also bounds a session's outbox
	MaxMessageSize int           // NOTIFY_MAX_MESSAGE_SIZE: also bounds a long-poll line
	LongPollHold   time.Duration // how long a poll waits for messages (default 10s)
	LongPollIdle   time.Duration // no poll for this long ends a session (default 25s)
	Logger         *slog.Logger
}

// Long-poll defaults.
const (
	DefaultLongPollHold = 10 * time.Second // under phoenix.js's 20 s request timeout
	DefaultLongPollIdle = 25 * time.Second
)

var errStopping = errors.New("node is stopping")

// Endpoint serves Phoenix Channels clients.
type Endpoint struct {
	cfg   Config
	log   *slog.Logger
	tasks *service.Tasks // state reads of user joins

	mu       sync.Mutex
	sessions map[string]*session // long-poll sessions by token
	ending   chan struct{}       // size 1: a session was cut, the reaper ends it
}

// New returns the endpoint; Run reaps its long-poll sessions.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Accept == nil || cfg.Hub == nil || cfg.Transport == nil || cfg.State == nil || cfg.Relay == nil {
		return nil, errors.New("phoenix: accept, hub, transport, state and relay are required")
	}
	if cfg.LongPollHold <= 0 {
		cfg.LongPollHold = DefaultLongPollHold
	}
	if cfg.LongPollIdle <= 0 {
		cfg.LongPollIdle = DefaultLongPollIdle
	}
	e := &Endpoint{cfg: cfg, log: cfg.Logger, tasks: service.NewTasks(),
		sessions: map[string]*session{}, ending: make(chan struct{}, 1)}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e, nil
}

// Run ends long-poll sessions that were cut or that nobody polls any more,
// until ctx ends; then it waits for the state reads of joins in flight.
func (e *Endpoint) Run(ctx context.Context) error {
	defer e.tasks.Stop()
	t := time.NewTicker(min(time.Second, e.cfg.LongPollIdle/4))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.ending:
		case <-t.C:
		}
		for _, s := range e.reapable(time.Now()) {
			s.end()
		}
	}
}

// vsn reads the serializer version: 2.0.0 (arrays, phoenix.js's default)
// or 1.0.0 (objects, older ports).
func (e *Endpoint) vsn(w http.ResponseWriter, r *http.Request) (vsn1, ok bool) {
	// Phoenix takes a missing vsn for 1.0.0 (Phoenix.Socket: params["vsn"]
	// || "1.0.0"); phoenix.js always sends one.
	switch v := r.URL.Query().Get("vsn"); v {
	case "2.0.0":
		return false, true
	case "", "1.0.0":
		return true, true
	default:
		e.cfg.Accept.Refuse(w, http.StatusBadRequest, admission.RejectBadRequest, "unsupported vsn "+respond.Quote(v)+": 2.0.0 or 1.0.0")
		return false, false
	}
}

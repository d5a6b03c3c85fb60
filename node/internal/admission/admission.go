// Package admission is the one accept pipeline every client endpoint goes
// through: the checks before anything is upgraded (a valid handshake, not
// draining, an allowed Origin, a valid token, allowed topics), the relay to
// the user's owner, and then the steps that make an admitted request a live
// client (register, read state, upgrade, attach). Every refusal and every
// failure is answered, counted and logged here, the same way for every
// protocol.
package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/node/internal/respond"
	"github.com/notify-dev/notify/transport"
)

// Owners decides where a client is served (placement implements it).
type Owners interface {
	// RelayToOwner relays the handshake to the user's owner when another
	// node owns the user, and reports whether it did (the request is then
	// answered); false means serve it here.
	RelayToOwner(w http.ResponseWriter, r *http.Request, user string) bool
	// RelayedBy names the node that relayed r here for user, or "": only
	// a relay signed by the cluster secret counts, a client's claim to be
	// one is removed from r.
	RelayedBy(r *http.Request, user string) string
}

// Receiver is told that a user's connection got every entry of its stream
// up to a cursor, by resuming (the hand-off of undelivered messages).
type Receiver interface {
	Received(ctx context.Context, user string, c broker.Cursor)
}

// Verifier checks a client token.
type Verifier interface {
	Verify(token string) (auth.Claims, error)
}

// Config of a Pipeline.
// Subscriptions is the broker's per-channel subscription, as far as
// admission needs it.
type Subscriptions interface {
	// Await returns once every target is subscribed, or with an error
	// (wrapping broker.ErrUnavailable) when ctx ends first.
	Await(ctx context.Context, targets ...broker.Target) error
}

type Config struct {
	Verifier Verifier // JWTs
	// PhoenixVerifier checks the tokens of the Phoenix endpoints (JWTs and
	// Phoenix.Tokens); nil: Verifier.
	PhoenixVerifier Verifier
	// ExpireConnections (NOTIFY_EXPIRE_CONNECTIONS) closes a connection
	// when its token expires; false checks the token at connect only.
	ExpireConnections bool
	AllowedOrigins    []string // NOTIFY_ALLOWED_ORIGINS, each valid for ParseOrigin
	OpenTopics        bool     // NOTIFY_OPEN_TOPICS
	SessionCookie     string   // NOTIFY_SESSION_COOKIE
	NodeName          string   // sent as X-Notify-Node on every accepted handshake
	Hub               *hub.Hub
	Transport         *transport.Server
	State             broker.StateStore
	History           History       // nil: history is off
	HistoryTTL        time.Duration // NOTIFY_HISTORY_TTL
	Receiver          Receiver      // nil: no hand-off to tell of resumes
	// Subscriptions (NOTIFY_SUBSCRIBE_MODE=user) is awaited before a
	// snapshot is read, so that what is published after it arrives; nil:
	// the broker's subscription covers every channel already.
	Subscriptions Subscriptions
	Owners        Owners
	Registerer    prometheus.Registerer
	Logger        *slog.Logger

	// MaxConnections (NOTIFY_MAX_CONNECTIONS, resolved by the node) bounds
	// Load; 0: no bound.
	MaxConnections int
	Relays         Relays // the relays Load counts; nil: none
	// MaxConnectionsPerUser (NOTIFY_MAX_CONNECTIONS_PER_USER) bounds one
	// user's connections on its owner (AddClient); 0: no bound.
	MaxConnectionsPerUser int
}

// Pipeline admits clients.
type Pipeline struct {
	cfg        Config
	log        *slog.Logger
	origins    []originPattern
	draining   atomic.Bool
	rejected   map[string]prometheus.Counter // by reason
	recoveries *recoveryMetrics
	refreshes  *refreshMetrics
	nodeHeader http.Header // X-Notify-Node, for Upgrade
}

// Rejection reasons (label of notify_connections_rejected_total).
const (
	RejectBadRequest   = "bad_request"
	RejectDraining     = "draining"
	RejectOrigin       = "origin"
	RejectUnauthorized = "unauthorized"
	RejectTopic        = "topic"
	RejectState        = "state_unavailable"
	RejectUpgrade      = "upgrade_failed"
	RejectLimit        = "limit" // NOTIFY_MAX_CONNECTIONS
)

var rejectReasons = []string{RejectBadRequest, RejectDraining, RejectOrigin, RejectUnauthorized, RejectTopic, RejectState, RejectUpgrade, RejectLimit, RejectUserLimit}

// New returns a pipeline; its metrics are registered on cfg.Registerer.
func New(cfg Config) (*Pipeline, error) {
	if cfg.Verifier == nil || cfg.Hub == nil || cfg.Transport == nil || cfg.State == nil || cfg.Owners == nil {
		return nil, errors.New("admission: verifier, hub, transport, state store and owners are required")
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger, rejected: make(map[string]prometheus.Counter, len(rejectReasons)),
		nodeHeader: http.Header{"X-Notify-Node": {cfg.NodeName}}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for _, o := range cfg.AllowedOrigins {
		op, err := parseOriginPattern(o)
		if err != nil {
			return nil, fmt.Errorf("NOTIFY_ALLOWED_ORIGINS %q: %w", o, err)
		}
		p.origins = append(p.origins, op)
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_connections_rejected_total",
		Help: "Connection attempts refused, by reason.",
	}, []string{"reason"})
	for _, r := range rejectReasons {
		p.rejected[r] = vec.WithLabelValues(r) // every series from the start
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(vec); err != nil {
			return nil, fmt.Errorf("admission metrics: %w", err)
		}
	}
	if err := registerLimit(cfg.Registerer, cfg.MaxConnections); err != nil {
		return nil, fmt.Errorf("admission metrics: %w", err)
	}
	var err error
	if p.recoveries, err = newRecoveryMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("admission metrics: %w", err)
	}
	if p.refreshes, err = newRefreshMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("admission metrics: %w", err)
	}
	return p, nil
}

// SetDraining makes every new client be refused with 503 from now on.
func (p *Pipeline) SetDraining() { p.draining.Store(true) }

// Draining reports whether the node is draining.
func (p *Pipeline) Draining() bool { return p.draining.Load() }

// NodeName is the name sent as X-Notify-Node.
func (p *Pipeline) NodeName() string { return p.cfg.NodeName }

// Verify checks a client token.
func (p *Pipeline) Verify(token string) (auth.Claims, error) { return p.cfg.Verifier.Verify(token) }

// VerifyPhoenix checks a token of the Phoenix endpoints: a JWT or a
// Phoenix.Token.
func (p *Pipeline) VerifyPhoenix(token string) (auth.Claims, error) {
	if p.cfg.PhoenixVerifier != nil {
		return p.cfg.PhoenixVerifier.Verify(token)
	}
	return p.cfg.Verifier.Verify(token)
}

// Token finds a client token in the sources of /notify/ws: the session
// cookie, the Authorization header, the authorization query parameter.
func (p *Pipeline) Token(r *http.Request) string {
	t, _ := auth.TokenFromRequest(r, p.cfg.SessionCookie)
	return t
}

// Request says what a protocol's handshake asks of Admit.
type Request struct {
	Token   string // found by the protocol's own token sources
	Upgrade bool   // a WebSocket handshake: validate it first
	Topics  bool   // parse and check the topic query parameters
	Phoenix bool   // a Phoenix endpoint: Phoenix.Tokens are taken too
	// Refuse answers a refusal in the protocol's own format; nil means the
	// contract's JSON error with the status.
	Refuse func(w http.ResponseWriter, status int, msg string)
	// Relay passes the request to the user's owner and reports whether it
	// did; nil means Owners.RelayToOwner.
	Relay func(w http.ResponseWriter, r *http.Request, user string) bool
}

// Admitted is a handshake that passed admission.
type Admitted struct {
	Claims auth.Claims
	Topics []string
	Via    string // the node that relayed the request here, if any
}

// Admit runs the checks every client endpoint shares, in this order: a valid
// WebSocket handshake (when asked), not draining, under the connection limit,
// an allowed Origin, a valid token, allowed topics; then, when another node
// owns the user, the relay there. false means the request has been answered.
//
// The limit comes before the token: a node at its limit spends nothing on a
// client it refuses. A relayed client is checked on both nodes, each
// against its own limit: here before the relay (it would hold the client's
// socket and the relay's), and on the owner when the relay arrives (it
// would hold the client). An owner at its limit answers 503 to the relay,
// and this node then serves the client itself, as for any owner that
// cannot take it (it had room: it just checked).
func (p *Pipeline) Admit(w http.ResponseWriter, r *http.Request, req Request) (Admitted, bool) {
	refuse := func(status int, reason, msg string) (Admitted, bool) {
		p.Count(reason)
		if req.Refuse != nil {
			req.Refuse(w, status, msg)
		} else {
			respond.Error(w, status, msg)
		}
		return Admitted{}, false
	}
	if req.Upgrade {
		if err := transport.CheckUpgrade(r); err != nil {
			ue, _ := transport.IsUpgradeError(err)
			if ue.Status == http.StatusUpgradeRequired {
				w.Header().Set("Sec-WebSocket-Version", "13")
			}
			return refuse(ue.Status, RejectBadRequest, ue.Msg)
		}
	}
	if p.Draining() {
		return refuse(http.StatusServiceUnavailable, RejectDraining, "node is draining, reconnect to another node")
	}
	if p.full() {
		setRetryAfter(w)
		return refuse(http.StatusServiceUnavailable, RejectLimit, LimitMessage)
	}
	if !p.OriginAllowed(r) {
		return refuse(http.StatusForbidden, RejectOrigin, "origin not allowed")
	}
	verify := p.Verify
	if req.Phoenix {
		verify = p.VerifyPhoenix
	}
	claims, err := verify(req.Token)
	if err != nil {
		return refuse(http.StatusUnauthorized, RejectUnauthorized, err.Error())
	}
	a := Admitted{Claims: claims, Via: p.cfg.Owners.RelayedBy(r, claims.UserID)}
	if req.Topics {
		if a.Topics, err = p.topics(r, claims); err != nil {
			var fe forbiddenError
			if errors.As(err, &fe) {
				return refuse(http.StatusForbidden, RejectTopic, err.Error())
			}
			return refuse(http.StatusBadRequest, RejectBadRequest, err.Error())
		}
	}
	relay := req.Relay
	if relay == nil {
		relay = p.cfg.Owners.RelayToOwner
	}
	if relay(w, r, claims.UserID) {
		return Admitted{}, false
	}
	return a, true
}

// Refuse answers a handshake with the contract's JSON error and counts it.
func (p *Pipeline) Refuse(w http.ResponseWriter, status int, reason, msg string) {
	p.Count(reason)
	respond.Error(w, status, msg)
}

// Count counts a refusal answered in a protocol's own format.
func (p *Pipeline) Count(reason string) {
	if c, ok := p.rejected[reason]; ok {
		c.Inc()
	}
}

// Package api implements the server API: notify.NotifyService over Twirp (on
// the HTTP port) and gRPC, and the Elixir service's
// notifications.NotificationsService over gRPC. Both transports share one
// implementation.
package api

import (
	"context"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/twitchtv/twirp"

	"github.com/notify-dev/notify/api/notificationspb"
	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
)

// MaxTargets bounds the user ids plus topics of one Publish.
const MaxTargets = 1000

// maxIDLen bounds user ids, topics and state field names.
const maxIDLen = 512

// Backend is what the API needs from the node.
type Backend interface {
	broker.StateStore
	// Verify checks a client token.
	Verify(token string) (auth.Claims, error)
	// Publish sends payload to every target through the broker (pipelined).
	Publish(ctx context.Context, targets []broker.Target, payload []byte) (Published, error)
	// Presence counts the open connections of each user.
	Presence(ctx context.Context, users []string) (map[string]uint32, error)
	// Disconnect closes every connection of user, on every node, with 4003.
	Disconnect(ctx context.Context, user string) error
	// PublishEvent sends message to users and topics with an event name
	// (Phoenix clients see it; /notify/ws clients get message verbatim).
	PublishEvent(ctx context.Context, users, topics []string, event, message string) error
}

// Published is what a Publish did.
type Published struct {
	// Cursors: with history on, each target's entry, in the order of the
	// targets; nil otherwise.
	Cursors []broker.Cursor
	// Connections of the user targets that took the message, when Counted.
	Connections int
	Counted     bool
}

// Service implements both APIs on a Backend.
type Service struct {
	// Embedded for gRPC's forward compatibility; Service's own methods win.
	notifypb.UnimplementedNotifyServiceServer
	notificationspb.UnimplementedNotificationsServiceServer
	b       Backend
	maxSize int
}

var (
	_ notifypb.NotifyService                     = (*Service)(nil) // Twirp
	_ notifypb.NotifyServiceServer               = (*Service)(nil) // gRPC
	_ notificationspb.NotificationsServiceServer = (*Service)(nil)
)

// NewService returns the API over b; payloads above maxPublishSize bytes are refused.
func NewService(b Backend, maxPublishSize int) *Service {
	return &Service{b: b, maxSize: maxPublishSize}
}

// Auth checks a client token and returns its user (public). The session
// cookie (NOTIFY_SESSION_COOKIE), when the Twirp request carried one, wins
// over the authorization field, as in go-bridget/notify.
func (s *Service) Auth(ctx context.Context, req *notifypb.AuthRequest) (*notifypb.AuthResponse, error) {
	tok := strings.TrimSpace(req.GetAuthorization())
	if c, ok := sessionCookie(ctx); ok {
		tok = c
	}
	if len(tok) > 7 && strings.EqualFold(tok[:7], "bearer ") {
		tok = strings.TrimSpace(tok[7:])
	}
	claims, err := s.b.Verify(tok)
	if err != nil {
		return nil, errorf(twirp.Unauthenticated, "%s", err.Error())
	}
	return &notifypb.AuthResponse{UserID: claims.UserID}, nil
}

// Publish sends a payload to users and topics through the broker.
func (s *Service) Publish(ctx context.Context, req *notifypb.PublishRequest) (*notifypb.PublishResponse, error) {
	n := len(req.GetUserIds()) + len(req.GetTopics())
	switch {
	case n == 0:
		return nil, errorf(twirp.InvalidArgument, "user_ids, topics: give at least one target")
	case n > MaxTargets:
		return nil, errorf(twirp.InvalidArgument, "user_ids, topics: %d targets, at most %d per call", n, MaxTargets)
	case len(req.GetPayload()) > 0 && req.GetText() != "":
		return nil, errorf(twirp.InvalidArgument, "payload, text: set one, not both")
	}
	payload := req.GetPayload()
	if payload == nil {
		payload = []byte(req.GetText())
	}
	if len(payload) > s.maxSize {
		return nil, errorf(twirp.InvalidArgument, "payload: %d bytes, at most %d (NOTIFY_MAX_PUBLISH_SIZE)", len(payload), s.maxSize)
	}
	targets := make([]broker.Target, 0, n)
	for _, u := range req.GetUserIds() {
		if err := checkName("user_ids", u); err != nil {
			return nil, err
		}
		targets = append(targets, broker.Target{Name: u})
	}
	for _, t := range req.GetTopics() {
		if err := checkName("topics", t); err != nil {
			return nil, err
		}
		targets = append(targets, broker.Target{Topic: true, Name: t})
	}
	p, err := s.b.Publish(ctx, targets, payload)
	if err != nil {
		return nil, fromBackend(ctx, "publish", err)
	}
	resp := &notifypb.PublishResponse{Targets: int32(len(targets))}
	for _, c := range p.Cursors {
		resp.Cursors = append(resp.Cursors, c.String())
	}
	if p.Counted {
		n := int32(min(p.Connections, math.MaxInt32))
		resp.Connections = &n
	}
	return resp, nil
}

// GetState returns a user's state object.
func (s *Service) GetState(ctx context.Context, req *notifypb.GetStateRequest) (*notifypb.GetStateResponse, error) {
	if err := checkName("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	st, err := s.b.GetState(ctx, req.GetUserId())
	if err != nil {
		return nil, fromBackend(ctx, "get state", err)
	}
	return &notifypb.GetStateResponse{State: st}, nil
}

// SetState merges fields into a user's state object.
func (s *Service) SetState(ctx context.Context, req *notifypb.SetStateRequest) (*notifypb.SetStateResponse, error) {
	if err := checkName("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	if len(req.GetFields()) == 0 {
		return nil, errorf(twirp.InvalidArgument, "fields: give at least one field")
	}
	size := 0
	for k, v := range req.GetFields() {
		if err := checkName("fields", k); err != nil {
			return nil, err
		}
		size += len(k) + len(v)
	}
	if size > s.maxSize {
		return nil, errorf(twirp.InvalidArgument, "fields: %d bytes, at most %d (NOTIFY_MAX_PUBLISH_SIZE)", size, s.maxSize)
	}
	if err := s.b.SetState(ctx, req.GetUserId(), req.GetFields()); err != nil {
		return nil, fromBackend(ctx, "set state", err)
	}
	return &notifypb.SetStateResponse{}, nil
}

// DeleteState removes named fields, or the whole state with all = true.
func (s *Service) DeleteState(ctx context.Context, req *notifypb.DeleteStateRequest) (*notifypb.DeleteStateResponse, error) {
	if err := checkName("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	switch {
	case req.GetAll() && len(req.GetFields()) > 0:
		return nil, errorf(twirp.InvalidArgument, "fields, all: name fields or set all, not both")
	case !req.GetAll() && len(req.GetFields()) == 0:
		return nil, errorf(twirp.InvalidArgument, "fields: name the fields to delete, or set all to delete the whole state")
	}
	for _, f := range req.GetFields() {
		if err := checkName("fields", f); err != nil {
			return nil, err
		}
	}
	if err := s.b.DeleteState(ctx, req.GetUserId(), req.GetFields()...); err != nil {
		return nil, fromBackend(ctx, "delete state", err)
	}
	return &notifypb.DeleteStateResponse{}, nil
}

// Presence counts the open connections of users.
func (s *Service) Presence(ctx context.Context, req *notifypb.PresenceRequest) (*notifypb.PresenceResponse, error) {
	ids := req.GetUserIds()
	switch {
	case len(ids) == 0:
		return nil, errorf(twirp.InvalidArgument, "user_ids: give at least one")
	case len(ids) > MaxTargets:
		return nil, errorf(twirp.InvalidArgument, "user_ids: %d, at most %d per call", len(ids), MaxTargets)
	}
	for _, u := range ids {
		if err := checkName("user_ids", u); err != nil {
			return nil, err
		}
	}
	counts, err := s.b.Presence(ctx, ids)
	if err != nil {
		return nil, fromBackend(ctx, "presence", err)
	}
	out := make(map[string]uint32, len(ids))
	for _, u := range ids {
		out[u] = counts[u]
	}
	return &notifypb.PresenceResponse{Connections: out}, nil
}

// Disconnect closes every connection of a user on every node with 4003.
func (s *Service) Disconnect(ctx context.Context, req *notifypb.DisconnectRequest) (*notifypb.DisconnectResponse, error) {
	if err := checkName("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	if err := s.b.Disconnect(ctx, req.GetUserId()); err != nil {
		return nil, fromBackend(ctx, "disconnect", err)
	}
	return &notifypb.DisconnectResponse{}, nil
}

// BroadcastTextMessage is the Elixir service's call: "user:<id>" targets a
// user, "group:<name>" a topic; message goes out verbatim.
func (s *Service) BroadcastTextMessage(ctx context.Context, req *notificationspb.BroadcastTextMessageRequest) (*notificationspb.BroadcastTextMessageResponse, error) {
	topics := req.GetTopics()
	switch {
	case len(topics) == 0:
		// The Elixir service broadcast to nobody: a no-op, not an error.
		return &notificationspb.BroadcastTextMessageResponse{}, nil
	case len(topics) > MaxTargets:
		return nil, errorf(twirp.InvalidArgument, "topics: %d, at most %d per call", len(topics), MaxTargets)
	case len(req.GetMessage()) > s.maxSize:
		return nil, errorf(twirp.InvalidArgument, "message: %d bytes, at most %d (NOTIFY_MAX_PUBLISH_SIZE)", len(req.GetMessage()), s.maxSize)
	}
	if len(req.GetEvent()) > maxIDLen || !utf8.ValidString(req.GetEvent()) || !utf8.ValidString(req.GetMessage()) {
		return nil, errorf(twirp.InvalidArgument, "event, message: must be UTF-8, event at most %d bytes", maxIDLen)
	}
	var users, groups []string
	for _, t := range topics {
		isGroup, name, err := elixirTopic(t)
		if err != nil {
			return nil, err
		}
		if isGroup {
			groups = append(groups, name)
		} else {
			users = append(users, name)
		}
	}
	if err := s.b.PublishEvent(ctx, users, groups, req.GetEvent(), req.GetMessage()); err != nil {
		return nil, fromBackend(ctx, "broadcast", err)
	}
	return &notificationspb.BroadcastTextMessageResponse{}, nil
}

// elixirTopic reads a Phoenix topic of the Elixir service, which broadcast
// to any topic name: user:<id> is user <id>, group:<name> is topic <name>,
// and any other name is the topic of that name.
func elixirTopic(topic string) (group bool, name string, err error) {
	if id, ok := strings.CutPrefix(topic, "user:"); ok {
		return false, id, checkName("topics", id)
	}
	if name, ok := strings.CutPrefix(topic, "group:"); ok {
		return true, name, checkName("topics", name)
	}
	return true, topic, checkName("topics", topic)
}

// checkName refuses empty, blank, overlong or non-UTF-8 ids.
func checkName(field, v string) error {
	switch {
	case strings.TrimFunc(v, unicode.IsSpace) == "":
		return errorf(twirp.InvalidArgument, "%s: empty or blank id", field)
	case len(v) > maxIDLen:
		return errorf(twirp.InvalidArgument, "%s: id longer than %d bytes", field, maxIDLen)
	case !utf8.ValidString(v):
		return errorf(twirp.InvalidArgument, "%s: id is not valid UTF-8", field)
	}
	return nil
}

package phoenix

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

const maxJoins = 64

// output is where a socket's messages go: a WebSocket connection or a
// long-poll session's outbox. Its methods never block and never call into
// the hub: delivery calls send with a shard lock held.
type output interface {
	send(frame []byte, direct bool) bool
	close(code int, reason string)
	closed() bool
}

// socket is one Phoenix socket: what its token grants, its joins, and the
// order of what it is sent. Lock order: handleMu, then hub locks, then mu;
// delivery holds a shard lock and takes mu, so nothing holding mu calls the
// hub.
type socket struct {
	hub.Client // Sink is the socket itself
	ep         *Endpoint
	grants     []string // the token's topics claim
	out        output
	vsn1       bool

	// handleMu serialises the socket's own requests (a long-poll client may
	// post concurrently) with the completion of a join's state read.
	handleMu sync.Mutex

	// mu guards joins, and the order of replies and pushes on the output.
	mu    sync.Mutex
	joins []*join // a few at most: a slice is smaller and quicker than a map
}

var _ hub.Sink = (*socket)(nil)

// join is a joined topic. While it is joining, pushes wait in pending so
// that none arrives before the join reply.
type join struct {
	topic   string
	joinRef json.RawMessage
	pending *pending // nil once joined
}

type pending struct {
	frames [][]byte
	bytes  int
}

func (s *socket) init(ep *Endpoint, a admission.Admitted, vsn1 bool, t hub.Transport, out output) {
	s.Client = hub.Client{User: a.Claims.UserID, Via: a.Via, Transport: t, Sink: s}
	s.ep, s.grants, s.vsn1, s.out = ep, a.Claims.Topics, vsn1, out
}

// Deliver implements hub.Sink: a published message, as a push on the topic
// it arrives on, if the socket joined it.
func (s *socket) Deliver(m *hub.Message, direct bool) bool {
	f := hub.FormatPhoenix2
	enc := push2
	if s.vsn1 {
		f, enc = hub.FormatPhoenix1, push1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.joinMatching(m)
	switch {
	case j == nil:
		return false
	case j.pending != nil:
		fr := m.Frame(f, enc)
		j.pending.bytes += len(fr)
		if j.pending.bytes > s.ep.cfg.SendQueueBytes {
			s.out.close(transport.CloseSlowConsumer, "slow consumer")
			return false
		}
		j.pending.frames = append(j.pending.frames, fr)
		return true
	}
	return s.out.send(m.Frame(f, enc), direct)
}

// Close implements hub.Sink.
func (s *socket) Close(code int, reason string) { s.out.close(code, reason) }

// Closed implements hub.Sink.
func (s *socket) Closed() bool { return s.out.closed() }

func (s *socket) joinMatching(m *hub.Message) *join {
	for _, j := range s.joins {
		if isTopicOf(j.topic, m) {
			return j
		}
	}
	return nil
}

// joinLocked returns the join of topic, or nil.
func (s *socket) joinLocked(topic string) *join {
	for _, j := range s.joins {
		if j.topic == topic {
			return j
		}
	}
	return nil
}

func (s *socket) dropLocked(j *join) {
	if i := slices.Index(s.joins, j); i >= 0 {
		s.joins = append(s.joins[:i:i], s.joins[i+1:]...)
	}
}

// replyLocked sends {"status": status, "response": response} for m.
func (s *socket) replyLocked(m message, joinRef json.RawMessage, status string, response any) {
	resp, _ := json.Marshal(response)
	payload, _ := json.Marshal(struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}{status, resp})
	s.out.send(frame(s.vsn1, message{joinRef: joinRef, ref: m.ref, topic: m.topic, event: "phx_reply", payload: payload}), true)
}

func (s *socket) reply(m message, status string, response any) {
	s.mu.Lock()
	s.replyLocked(m, m.joinRef, status, response)
	s.mu.Unlock()
}

type reason struct {
	Reason string `json:"reason"`
}

var empty = struct{}{}

// handle runs one message from the client.
func (s *socket) handle(m message) {
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	switch {
	case m.topic == "phoenix" && m.event == "heartbeat":
		s.reply(m, "ok", empty)
	case m.event == "phx_join":
		s.join(m)
	case m.event == "phx_leave":
		s.leave(m, true)
	default:
		s.mu.Lock()
		j := s.joinLocked(m.topic)
		s.mu.Unlock()
		switch {
		case j == nil:
			// As Phoenix answers a message for a channel that is not there.
			s.reply(m, "error", reason{"unmatched topic"})
		case m.topic == "ping" && m.event == "ping":
			s.reply(m, "ok", map[string]string{"ping": "pong"})
		default:
			s.reply(m, "error", reason{"unknown event"})
		}
	}
}

// join runs phx_join. Joining a topic already joined closes the old join
// first (phx_close with its join_ref), as Phoenix does.
func (s *socket) join(m message) {
	s.mu.Lock()
	rejoin := s.joinLocked(m.topic) != nil
	n := len(s.joins)
	s.mu.Unlock()
	if rejoin {
		s.leave(m, false)
	} else if n >= maxJoins {
		s.reply(m, "error", reason{"too many topics"})
		return
	}
	h := s.ep.cfg.Hub
	switch {
	case m.topic == "ping":
		s.joined(m, func() {})
	case strings.HasPrefix(m.topic, userPrefix):
		if strings.TrimPrefix(m.topic, userPrefix) != s.User {
			s.reply(m, "error", reason{"unauthorized"})
			return
		}
		s.joinUser(m)
	case strings.HasPrefix(m.topic, groupPrefix):
		name := strings.TrimPrefix(m.topic, groupPrefix)
		if name == "" || len(name) > admission.MaxTopicLen || !s.ep.cfg.Accept.AllowsTopic(auth.Claims{Topics: s.grants}, name) {
			s.reply(m, "error", reason{"unauthorized"})
			return
		}
		s.joined(m, func() { h.JoinTopic(&s.Client, strings.Clone(name)) })
	default:
		s.reply(m, "error", reason{"unmatched topic"})
	}
}

// joined records a join, registers it (pushes from then on wait behind the
// reply), then replies ok and lets them through.
func (s *socket) joined(m message, register func()) {
	j := s.addJoin(m)
	register()
	s.mu.Lock()
	s.replyLocked(m, m.joinRef, "ok", empty)
	s.flushLocked(j)
	s.mu.Unlock()
}

func (s *socket) addJoin(m message) *join {
	j := &join{topic: m.topic, joinRef: m.joinRef, pending: &pending{}}
	s.mu.Lock()
	s.joins = append(s.joins, j)
	s.mu.Unlock()
	return j
}

func (s *socket) flushLocked(j *join) {
	for _, f := range j.pending.frames {
		s.out.send(f, true)
	}
	j.pending = nil
}

// joinUser registers the socket under its user before reading the state, as
// /notify/ws does, so nothing published meanwhile is lost; the read runs off
// the caller's goroutine (an event loop must not wait for Redis).
func (s *socket) joinUser(m message) {
	j := s.addJoin(m)
	s.ep.cfg.Hub.JoinUser(&s.Client)
	started := s.ep.tasks.Go(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, admission.StateReadTimeout)
		state, err := s.ep.cfg.State.GetState(ctx, s.User)
		cancel()
		s.userJoined(m, j, state, err)
	})
	if !started {
		s.userJoined(m, j, nil, errStopping)
	}
}

// userJoined completes joinUser once the state is read.
func (s *socket) userJoined(m message, j *join, state map[string]string, err error) {
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	s.mu.Lock()
	if s.joinLocked(m.topic) != j { // left or rejoined meanwhile
		s.mu.Unlock()
		return
	}
	if err != nil {
		s.dropLocked(j)
		s.replyLocked(m, m.joinRef, "error", reason{"state unavailable, retry later"})
		s.mu.Unlock()
		s.ep.cfg.Hub.LeaveUser(&s.Client)
		s.ep.log.Warn("state read failed; Phoenix join refused", "user", s.User, "err", err)
		return
	}
	if state == nil {
		state = map[string]string{}
	}
	s.replyLocked(m, m.joinRef, "ok", state)
	s.flushLocked(j)
	s.mu.Unlock()
}

// leave ends a join: with reply (phx_leave) an ok reply first; then
// phx_close with the join's ref, as Phoenix closes a channel.
func (s *socket) leave(m message, reply bool) {
	s.mu.Lock()
	j := s.joinLocked(m.topic)
	if j == nil {
		s.mu.Unlock()
		if reply {
			s.reply(m, "error", reason{"unmatched topic"})
		}
		return
	}
	s.dropLocked(j)
	if reply {
		s.replyLocked(m, m.joinRef, "ok", empty)
	}
	s.out.send(frame(s.vsn1, message{joinRef: j.joinRef, ref: jsonNull, topic: m.topic, event: "phx_close", payload: json.RawMessage("{}")}), true)
	s.mu.Unlock()
	switch {
	case strings.HasPrefix(m.topic, userPrefix):
		s.ep.cfg.Hub.LeaveUser(&s.Client)
	case strings.HasPrefix(m.topic, groupPrefix):
		s.ep.cfg.Hub.LeaveTopic(&s.Client, strings.TrimPrefix(m.topic, groupPrefix))
	}
}

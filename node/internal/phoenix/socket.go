package phoenix

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

const maxJoins = 64

// output is where a socket's messages go: a WebSocket connection or a
// long-poll session's outbox. Its methods never block and never call into
// the hub: delivery calls send with a shard lock held.
type output interface {
	// send queues frame; b, when not nil (a delivery's hub.Message.Batch),
	// holds back the wake-up of the event loop.
	send(frame []byte, direct bool, b *transport.Batch) bool
	close(code int, reason string)
	closed() bool
	// setExpiry moves when the socket expires (a refresh; zero: never).
	setExpiry(t time.Time)
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
// that none arrives before the join reply (nor before the replay of what
// the client missed, none of it twice).
type join struct {
	topic   string
	joinRef json.RawMessage
	cursors bool     // the join asked for cursors ("since" in its payload): pushes carry them
	pending *pending // nil once joined
}

type pending struct {
	pushes []pendingPush
	bytes  int
}

type pendingPush struct {
	frame  []byte
	cursor broker.Cursor
}

func (s *socket) init(ep *Endpoint, a admission.Admitted, vsn1 bool, t hub.Transport, out output) {
	s.Client = hub.Client{User: a.Claims.UserID, Via: a.Via, Transport: t, Sink: s}
	s.ep, s.grants, s.vsn1, s.out = ep, a.Claims.Topics, vsn1, out
}

// Deliver implements hub.Sink: a published message, as a push on the topic
// it arrives on, if the socket joined it.
func (s *socket) Deliver(m *hub.Message, direct bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.joinMatching(m)
	if j == nil {
		return false
	}
	fr := s.push(m, j.cursors)
	if j.pending != nil {
		j.pending.bytes += len(fr)
		if j.pending.bytes > s.ep.cfg.SendQueueBytes {
			s.out.close(transport.CloseSlowConsumer, "slow consumer")
			return false
		}
		j.pending.pushes = append(j.pending.pushes, pendingPush{fr, m.Cursor})
		return true
	}
	return s.out.send(fr, direct, m.Batch)
}

// push is m as this socket's serializer (and the join's choice of cursors)
// encodes it, built once per message for all sockets that encode it alike.
func (s *socket) push(m *hub.Message, cursors bool) []byte {
	switch {
	case s.vsn1 && cursors:
		return m.Frame(hub.FormatPhoenix1Cursor, push1Cursor)
	case s.vsn1:
		return m.Frame(hub.FormatPhoenix1, push1)
	case cursors:
		return m.Frame(hub.FormatPhoenix2Cursor, push2Cursor)
	}
	return m.Frame(hub.FormatPhoenix2, push2)
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
	s.out.send(frame(s.vsn1, message{joinRef: joinRef, ref: m.ref, topic: m.topic, event: "phx_reply", payload: payload}), true, nil)
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
		case m.event == "refresh":
			s.refresh(m)
		default:
			s.reply(m, "error", reason{"unknown event"})
		}
	}
}

// join runs phx_join. Joining a topic already joined closes the old join
// first (phx_close with its join_ref), as Phoenix does. A join payload
// {"since": "<cursor>"} (history on) asks for cursors and for what came
// after that cursor; "" asks for cursors from now on.
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
	since, err := s.sinceOf(m)
	if err != nil {
		s.reply(m, "error", reason{err.Error()})
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
		j := s.addJoin(m, since.Asked)
		h.JoinUser(&s.Client)
		s.joinAsync(m, j, true, broker.Target{Name: s.User}, since)
	case strings.HasPrefix(m.topic, groupPrefix):
		name := strings.TrimPrefix(m.topic, groupPrefix)
		if name == "" || len(name) > admission.MaxTopicLen || !s.ep.cfg.Accept.AllowsTopic(auth.Claims{Topics: s.grants}, name) {
			s.reply(m, "error", reason{"unauthorized"})
			return
		}
		name = strings.Clone(name)
		if !since.Asked && !s.ep.cfg.Accept.AwaitsSubscriptions() {
			s.joined(m, func() { h.JoinTopic(&s.Client, name) })
			return
		}
		j := s.addJoin(m, since.Asked)
		h.JoinTopic(&s.Client, name)
		s.joinAsync(m, j, false, broker.Target{Topic: true, Name: name}, since)
	default:
		s.reply(m, "error", reason{"unmatched topic"})
	}
}

// sinceOf reads the join payload's "since" (history on; ignored otherwise).
func (s *socket) sinceOf(m message) (admission.Since, error) {
	if !s.ep.cfg.Accept.HistoryOn() || len(m.payload) == 0 {
		return admission.Since{}, nil
	}
	var p struct {
		Since *string `json:"since"`
	}
	if json.Unmarshal(m.payload, &p) != nil || p.Since == nil {
		return admission.Since{}, nil // a payload of another shape: no resume asked
	}
	c, err := broker.ParseCursor(*p.Since)
	if err != nil {
		return admission.Since{}, errors.New("malformed since cursor")
	}
	return admission.Since{Cursor: c, Asked: true}, nil
}

// joined records a join, registers it (pushes from then on wait behind the
// reply), then replies ok and lets them through.
func (s *socket) joined(m message, register func()) {
	j := s.addJoin(m, false)
	register()
	s.mu.Lock()
	s.replyLocked(m, m.joinRef, "ok", empty)
	s.flushLocked(j, broker.Cursor{})
	s.mu.Unlock()
}

func (s *socket) addJoin(m message, cursors bool) *join {
	j := &join{topic: m.topic, joinRef: m.joinRef, cursors: cursors, pending: &pending{}}
	s.mu.Lock()
	s.joins = append(s.joins, j)
	s.mu.Unlock()
	return j
}

// flushLocked lets the pushes that waited through, minus those a replay up
// to newest already sent.
func (s *socket) flushLocked(j *join, newest broker.Cursor) {
	for _, p := range j.pending.pushes {
		if !p.cursor.IsZero() && p.cursor.Epoch == newest.Epoch && p.cursor.Seq <= newest.Seq {
			continue
		}
		s.out.send(p.frame, true, nil)
	}
	j.pending = nil
}

// joinAsync completes a join that must read first, off the caller's
// goroutine (an event loop must not wait for Redis): the socket is already
// registered, so nothing published meanwhile is lost. It reads the user's
// state (readState) and, for a join that asked for cursors, the stream's
// history.
func (s *socket) joinAsync(m message, j *join, readState bool, t broker.Target, since admission.Since) {
	started := s.ep.tasks.Go(func(ctx context.Context) {
		var r joinRead
		if r.unsubscribed = s.ep.cfg.Accept.AwaitSubscribed(ctx, t); r.unsubscribed != nil {
			s.joinCompleted(m, j, t, r)
			return
		}
		if readState {
			sctx, cancel := context.WithTimeout(ctx, admission.StateReadTimeout)
			r.state, r.err = s.ep.cfg.State.GetState(sctx, s.User)
			cancel()
		}
		if j.cursors {
			r.stream = s.ep.cfg.Accept.ReadStream(ctx, t, since)
		}
		s.joinCompleted(m, j, t, r)
	})
	if !started {
		s.joinCompleted(m, j, t, joinRead{err: errStopping})
	}
}

// joinRead is what a join read before it replies.
type joinRead struct {
	state  map[string]string
	stream *admission.Stream // a join that asked for cursors
	err    error             // of the state read
	// unsubscribed: the channel's subscription did not come
	// (NOTIFY_SUBSCRIBE_MODE=user); nothing was read.
	unsubscribed error
}

// joinCompleted replies to a join that read first, then sends what the
// client missed and the pushes that waited, none twice.
func (s *socket) joinCompleted(m message, j *join, t broker.Target, r joinRead) {
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	s.mu.Lock()
	if s.joinLocked(m.topic) != j { // left or rejoined meanwhile
		s.mu.Unlock()
		return
	}
	if r.unsubscribed != nil {
		s.dropLocked(j)
		s.replyLocked(m, m.joinRef, "error", reason{"unavailable, retry later"})
		s.mu.Unlock()
		if t.Topic {
			s.ep.cfg.Hub.LeaveTopic(&s.Client, t.Name)
		} else {
			s.ep.cfg.Hub.LeaveUser(&s.Client)
		}
		s.ep.log.Warn("subscription not confirmed; Phoenix join refused", "user", s.User, "join", m.topic, "err", r.unsubscribed)
		return
	}
	if r.err != nil && !j.cursors {
		// Without a resume asked the join needs its state; with one, the
		// client is told it did not recover and reloads (nothing hangs).
		s.dropLocked(j)
		s.replyLocked(m, m.joinRef, "error", reason{"state unavailable, retry later"})
		s.mu.Unlock()
		s.ep.cfg.Hub.LeaveUser(&s.Client)
		s.ep.log.Warn("state read failed; Phoenix join refused", "user", s.User, "err", r.err)
		return
	}
	var newest broker.Cursor
	if r.stream != nil {
		newest = r.stream.Newest
		replay := r.stream.Tail(s.ep.cfg.SendQueueBytes)
		s.replyLocked(m, m.joinRef, "ok", joinReply(!t.Topic, r))
		for _, en := range replay {
			hm := hub.Message{Topic: t.Topic, Name: t.Name, Payload: en.Payload, Cursor: en.Cursor, Event: en.Event}
			s.out.send(s.push(&hm, true), true, nil)
		}
	} else {
		s.replyLocked(m, m.joinRef, "ok", stateOrEmpty(r.state))
	}
	s.flushLocked(j, newest)
	s.mu.Unlock()
}

func stateOrEmpty(state map[string]string) map[string]string {
	if state == nil {
		return map[string]string{}
	}
	return state
}

// joinReply is the response of a join that asked for cursors:
// {"state":{...},"cursor":"...","recovered":...} for user:<id> (without
// "state" for group:<name>).
func joinReply(userJoin bool, r joinRead) any {
	v := struct {
		State     map[string]string `json:"state,omitempty"`
		Cursor    string            `json:"cursor,omitempty"`
		Recovered bool              `json:"recovered"`
	}{Cursor: r.stream.Newest.String(), Recovered: r.stream.Recovered}
	if userJoin {
		v.State = stateOrEmpty(r.state)
	}
	return v
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
	s.out.send(frame(s.vsn1, message{joinRef: j.joinRef, ref: jsonNull, topic: m.topic, event: "phx_close", payload: json.RawMessage("{}")}), true, nil)
	s.mu.Unlock()
	switch {
	case strings.HasPrefix(m.topic, userPrefix):
		s.ep.cfg.Hub.LeaveUser(&s.Client)
	case strings.HasPrefix(m.topic, groupPrefix):
		s.ep.cfg.Hub.LeaveTopic(&s.Client, strings.TrimPrefix(m.topic, groupPrefix))
	}
}

package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/transport"
)

// Phoenix Channels (phoenix.js 1.x and its Swift, Kotlin, Dart and C#
// ports), as the Elixir notifications-service served them: topics
// user:<id> (the token's user; the join reply carries the state object),
// group:<name> (when the token grants it) and ping. The protocol logic lives
// here, shared by the WebSocket transport (/pubsub/websocket) and long-poll
// (/pubsub/longpoll); phxOut is what differs.

const maxPhoenixJoins = 64

// phxMessage is one Phoenix message. Refs are kept as the raw JSON the
// client sent (a string, a number or null), so replies echo them exactly.
type phxMessage struct {
	joinRef, ref json.RawMessage
	topic, event string
	payload      json.RawMessage
}

var jsonNull = json.RawMessage("null")

var errMalformed = errors.New("malformed Phoenix message")

// decodePhoenix reads a text message: a JSON array [join_ref, ref, topic,
// event, payload] for vsn 2.0.0, an object for 1.0.0.
func decodePhoenix(vsn1 bool, b []byte) (phxMessage, error) {
	var m phxMessage
	if vsn1 {
		var o struct {
			Topic   *string         `json:"topic"`
			Event   *string         `json:"event"`
			Payload json.RawMessage `json:"payload"`
			Ref     json.RawMessage `json:"ref"`
			JoinRef json.RawMessage `json:"join_ref"`
		}
		if err := json.Unmarshal(b, &o); err != nil || o.Topic == nil || o.Event == nil {
			return m, errMalformed
		}
		m = phxMessage{joinRef: o.JoinRef, ref: o.Ref, topic: *o.Topic, event: *o.Event, payload: o.Payload}
	} else {
		var a []json.RawMessage
		if err := json.Unmarshal(b, &a); err != nil || len(a) != 5 {
			return m, errMalformed
		}
		m = phxMessage{joinRef: a[0], ref: a[1], payload: a[4]}
		if json.Unmarshal(a[2], &m.topic) != nil || json.Unmarshal(a[3], &m.event) != nil {
			return m, errMalformed
		}
	}
	if !validRef(m.joinRef) || !validRef(m.ref) {
		return m, errMalformed
	}
	return m, nil
}

// validRef: a ref is null, a string or a number; anything else would be
// echoed into our replies.
func validRef(r json.RawMessage) bool {
	r = bytes.TrimSpace(r)
	if len(r) == 0 || string(r) == "null" {
		return true
	}
	switch r[0] {
	case '"':
		var s string
		return json.Unmarshal(r, &s) == nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var f json.Number
		return json.Unmarshal(r, &f) == nil
	}
	return false
}

// decodePhoenixBinary reads phoenix.js's binary push:
// [kind=0][join_ref len][topic len][event len] join_ref topic event payload.
// Only the routing fields matter here; the payload is not used.
func decodePhoenixBinary(b []byte) (phxMessage, error) {
	if len(b) < 4 || b[0] != 0 {
		return phxMessage{}, errMalformed
	}
	jl, tl, el := int(b[1]), int(b[2]), int(b[3])
	if len(b) < 4+jl+tl+el {
		return phxMessage{}, errMalformed
	}
	p := b[4:]
	joinRef, _ := json.Marshal(string(p[:jl]))
	m := phxMessage{joinRef: joinRef, ref: jsonNull, topic: string(p[jl : jl+tl]), event: string(p[jl+tl : jl+tl+el]), payload: jsonNull}
	if !utf8.ValidString(m.topic) || !utf8.ValidString(m.event) {
		return m, errMalformed
	}
	return m, nil
}

func rawOrNull(r json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(r)) == 0 {
		return jsonNull
	}
	return r
}

// encodePhoenix writes m in the serializer's format.
func encodePhoenix(vsn1 bool, m phxMessage) []byte {
	topic, _ := json.Marshal(m.topic)
	event, _ := json.Marshal(m.event)
	var b bytes.Buffer
	if vsn1 {
		b.WriteString(`{"topic":`)
		b.Write(topic)
		b.WriteString(`,"event":`)
		b.Write(event)
		b.WriteString(`,"payload":`)
		b.Write(rawOrNull(m.payload))
		b.WriteString(`,"ref":`)
		b.Write(rawOrNull(m.ref))
		b.WriteString(`,"join_ref":`)
		b.Write(rawOrNull(m.joinRef))
		b.WriteByte('}')
		return b.Bytes()
	}
	b.WriteByte('[')
	b.Write(rawOrNull(m.joinRef))
	b.WriteByte(',')
	b.Write(rawOrNull(m.ref))
	b.WriteByte(',')
	b.Write(topic)
	b.WriteByte(',')
	b.Write(event)
	b.WriteByte(',')
	b.Write(rawOrNull(m.payload))
	b.WriteByte(']')
	return b.Bytes()
}

// phxOut is where a Phoenix socket's messages go: a WebSocket connection or
// a long-poll session's outbox.
type phxOut interface {
	send(f phxFrame, direct bool) bool
	close(code int, reason string)
}

// phxSocket is one Phoenix socket: what its token grants, its joins, and
// the order of what it is sent. Lock order: handleMu, then hub shard locks,
// then mu; delivery holds a shard lock and takes mu, so nothing holding mu
// may take a shard lock.
type phxSocket struct {
	n      *Node
	c      *client  // its user is the token's
	grants []string // the token's topics claim
	out    phxOut
	vsn1   bool

	// handleMu serialises the socket's own requests (a long-poll client may
	// post concurrently) with the completion of a join's state read.
	handleMu sync.Mutex

	// mu guards joins, the order of replies and pushes on the output, and
	// (client.lockSubs) the client's hub positions.
	mu    sync.Mutex
	joins []*phxJoin // a few at most: a slice is smaller and quicker than a map

	// The node's list of Phoenix sockets (guarded by Node.phxMu).
	regPrev, regNext *phxSocket
	registered       bool
}

// phxJoin is a joined topic. While it is joining, pushes wait in pending
// so that none arrives before the join reply.
type phxJoin struct {
	topic   string
	joinRef json.RawMessage
	pending *phxPending // nil once joined
}

type phxPending struct {
	frames []phxFrame
	bytes  int
}

func (n *Node) registerPhoenix(p *phxSocket) {
	n.phxMu.Lock()
	defer n.phxMu.Unlock()
	p.regPrev, p.regNext, p.registered = nil, n.phxHead, true
	if n.phxHead != nil {
		n.phxHead.regPrev = p
	}
	n.phxHead = p
}

func (n *Node) unregisterPhoenix(p *phxSocket) {
	n.phxMu.Lock()
	defer n.phxMu.Unlock()
	if !p.registered {
		return
	}
	if p.regPrev != nil {
		p.regPrev.regNext = p.regNext
	} else {
		n.phxHead = p.regNext
	}
	if p.regNext != nil {
		p.regNext.regPrev = p.regPrev
	}
	p.regPrev, p.regNext, p.registered = nil, nil, false
}

func newPhxSocket(n *Node, c *client, vsn1 bool, claims auth.Claims, out phxOut) *phxSocket {
	return &phxSocket{n: n, c: c, vsn1: vsn1, grants: claims.Topics, out: out}
}

// joinLocked returns the join of topic, or nil.
func (p *phxSocket) joinLocked(topic string) *phxJoin {
	for _, j := range p.joins {
		if j.topic == topic {
			return j
		}
	}
	return nil
}

func (p *phxSocket) dropLocked(j *phxJoin) {
	for i, x := range p.joins {
		if x == j {
			p.joins = append(p.joins[:i:i], p.joins[i+1:]...)
			return
		}
	}
}

func (p *phxSocket) allows(topic string) bool {
	return p.n.cfg.OpenTopics || slices.Contains(p.grants, topic)
}

// push delivers a broadcast on topic, if the socket joined it.
func (p *phxSocket) push(topic string, f phxFrame, direct bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	j := p.joinLocked(topic)
	switch {
	case j == nil:
		return false
	case j.pending != nil:
		j.pending.bytes += len(f.text)
		if j.pending.bytes > p.n.cfg.SendQueueBytes {
			p.out.close(transport.CloseSlowConsumer, "slow consumer")
			return false
		}
		j.pending.frames = append(j.pending.frames, f)
		return true
	}
	return p.out.send(f, direct)
}

// newPhxFrame encodes m once, as a WebSocket text frame whose tail is the
// text a long-poll client gets.
func newPhxFrame(vsn1 bool, m phxMessage) phxFrame {
	text := encodePhoenix(vsn1, m)
	frame := transport.TextFrame(text)
	return phxFrame{frame: frame, text: frame[len(frame)-len(text):]}
}

// replyLocked sends {"status": status, "response": response} for m.
func (p *phxSocket) replyLocked(m phxMessage, joinRef json.RawMessage, status string, response any) {
	resp, _ := json.Marshal(response)
	payload, _ := json.Marshal(struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}{status, resp})
	p.out.send(newPhxFrame(p.vsn1, phxMessage{joinRef: joinRef, ref: m.ref, topic: m.topic, event: "phx_reply", payload: payload}), true)
}

func (p *phxSocket) reply(m phxMessage, status string, response any) {
	p.mu.Lock()
	p.replyLocked(m, m.joinRef, status, response)
	p.mu.Unlock()
}

type reason struct {
	Reason string `json:"reason"`
}

var empty = struct{}{}

// handle runs one message from the client.
func (p *phxSocket) handle(m phxMessage) {
	p.handleMu.Lock()
	defer p.handleMu.Unlock()
	switch {
	case m.topic == "phoenix" && m.event == "heartbeat":
		p.reply(m, "ok", empty)
	case m.event == "phx_join":
		p.join(m)
	case m.event == "phx_leave":
		p.leave(m, true)
	default:
		p.mu.Lock()
		j := p.joinLocked(m.topic)
		p.mu.Unlock()
		switch {
		case j == nil:
			// As Phoenix answers a message for a channel that is not there.
			p.reply(m, "error", reason{"unmatched topic"})
		case m.topic == "ping" && m.event == "ping":
			p.reply(m, "ok", map[string]string{"ping": "pong"})
		default:
			p.reply(m, "error", reason{"unknown event"})
		}
	}
}

// join runs phx_join. Joining a topic already joined closes the old join
// first (phx_close with its join_ref), as Phoenix does.
func (p *phxSocket) join(m phxMessage) {
	p.mu.Lock()
	rejoin := p.joinLocked(m.topic) != nil
	n := len(p.joins)
	p.mu.Unlock()
	if rejoin {
		p.leave(m, false)
	} else if n >= maxPhoenixJoins {
		p.reply(m, "error", reason{"too many topics"})
		return
	}

	switch {
	case m.topic == "ping":
		p.joined(m, func() {}, empty)
	case strings.HasPrefix(m.topic, "user:"):
		if strings.TrimPrefix(m.topic, "user:") != p.c.user {
			p.reply(m, "error", reason{"unauthorized"})
			return
		}
		p.joinUser(m)
	case strings.HasPrefix(m.topic, "group:"):
		name := strings.TrimPrefix(m.topic, "group:")
		if name == "" || len(name) > maxTopicLen || !p.allows(name) {
			p.reply(m, "error", reason{"unauthorized"})
			return
		}
		p.joined(m, func() { p.n.hub.addTopic(p.c, strings.Clone(name)) }, empty)
	default:
		p.reply(m, "error", reason{"unmatched topic"})
	}
}

// joined records a join, registers it (pushes from then on wait behind the
// reply), then replies ok and lets them through.
func (p *phxSocket) joined(m phxMessage, register func(), response any) {
	j := &phxJoin{topic: m.topic, joinRef: m.joinRef, pending: &phxPending{}}
	p.mu.Lock()
	p.joins = append(p.joins, j)
	p.mu.Unlock()
	register()
	p.mu.Lock()
	p.replyLocked(m, m.joinRef, "ok", response)
	p.flushLocked(j)
	p.mu.Unlock()
}

func (p *phxSocket) flushLocked(j *phxJoin) {
	for _, f := range j.pending.frames {
		p.out.send(f, true)
	}
	j.pending = nil
}

// joinUser registers the socket under its user before reading the state, as
// /notify/ws does, so nothing published meanwhile is lost; the read runs off
// the caller's goroutine (an event loop must not wait for Redis).
func (p *phxSocket) joinUser(m phxMessage) {
	j := &phxJoin{topic: m.topic, joinRef: m.joinRef, pending: &phxPending{}}
	p.mu.Lock()
	p.joins = append(p.joins, j)
	p.mu.Unlock()
	p.n.hub.addUser(p.c)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stateReadTimeout)
		state, err := p.n.state.GetState(ctx, p.c.user)
		cancel()
		p.handleMu.Lock()
		defer p.handleMu.Unlock()
		p.mu.Lock()
		if p.joinLocked(m.topic) != j { // left or rejoined meanwhile
			p.mu.Unlock()
			return
		}
		if err != nil {
			p.dropLocked(j)
			p.replyLocked(m, m.joinRef, "error", reason{"state unavailable, retry later"})
			p.mu.Unlock()
			p.n.hub.removeUser(p.c)
			p.n.log.Warn("state read failed; Phoenix join refused", "user", p.c.user, "err", err)
			return
		}
		if state == nil {
			state = map[string]string{}
		}
		p.replyLocked(m, m.joinRef, "ok", state)
		p.flushLocked(j)
		p.mu.Unlock()
	}()
}

// leave ends a join: with reply (phx_leave) an ok reply first; then
// phx_close with the join's ref, as Phoenix closes a channel.
func (p *phxSocket) leave(m phxMessage, reply bool) {
	p.mu.Lock()
	j := p.joinLocked(m.topic)
	if j == nil {
		p.mu.Unlock()
		if reply {
			p.reply(m, "error", reason{"unmatched topic"})
		}
		return
	}
	p.dropLocked(j)
	if reply {
		p.replyLocked(m, m.joinRef, "ok", empty)
	}
	p.out.send(newPhxFrame(p.vsn1, phxMessage{joinRef: j.joinRef, ref: jsonNull, topic: m.topic, event: "phx_close", payload: json.RawMessage("{}")}), true)
	p.mu.Unlock()
	switch {
	case strings.HasPrefix(m.topic, "user:"):
		p.n.hub.removeUser(p.c)
	case strings.HasPrefix(m.topic, "group:"):
		p.n.hub.removeTopic(p.c, strings.TrimPrefix(m.topic, "group:"))
	}
}

// onFrame runs a WebSocket message of a Phoenix client. Input that is not a
// Phoenix message ends the connection with 1007: there is no ref to reply to.
func (p *phxSocket) onFrame(text bool, b []byte) {
	var m phxMessage
	var err error
	if text {
		m, err = decodePhoenix(p.vsn1, b)
	} else {
		m, err = decodePhoenixBinary(b)
	}
	if err != nil {
		p.out.close(transport.CloseInvalidPayload, "malformed Phoenix message")
		return
	}
	p.handle(m)
}

// wsOut is a Phoenix socket's WebSocket connection.
type wsOut struct{ conn *transport.Conn }

func (o wsOut) send(f phxFrame, direct bool) bool { return send(o.conn, f.frame, direct) }
func (o wsOut) close(code int, reason string)     { o.conn.Close(code, reason) }

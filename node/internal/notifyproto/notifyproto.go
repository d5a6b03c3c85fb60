// Package notifyproto serves the Notify protocol of go-bridget/notify
// (DESIGN.md section 2): the WebSocket at /notify/ws and its Server-Sent
// Events twin at /notify/sse. Frames: connect, state, then every payload
// published to the user or a joined topic, verbatim (or, with ?envelope=1,
// as message frames with their cursor). A client that resumes from cursors
// first gets what it missed, then the live messages, none twice.
package notifyproto

import (
	"encoding/json"
	"sync/atomic"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// Config of the Endpoint.
type Config struct {
	Accept         *admission.Pipeline
	Transport      *transport.Server
	Hub            *hub.Hub
	History        bool // history is on: state frames carry cursors, clients may resume
	SendQueueBytes int  // NOTIFY_SEND_QUEUE_BYTES: also bounds what a connect holds and replays
}

// Endpoint serves /notify/ws and /notify/sse.
type Endpoint struct {
	cfg Config
}

// New returns the endpoint.
func New(cfg Config) *Endpoint { return &Endpoint{cfg: cfg} }

// client is what a /notify/ws and a /notify/sse client share: the hub's entry,
// the transport connection, and its events. A client is one allocation.
type client struct {
	hub.Client
	conn *transport.Conn
	ep   *Endpoint
	// hold keeps live messages while the connect reads the client's
	// history (nil otherwise): the Sink offers them to it first.
	hold atomic.Pointer[hub.Hold]
}

// held reports whether m went to the client's hold.
func (c *client) held(m *hub.Message) bool {
	h := c.hold.Load()
	return h != nil && h.Offer(m)
}

// Close implements hub.Sink.
func (c *client) Close(code int, reason string) { c.conn.Close(code, reason) }

// Closed implements hub.Sink.
func (c *client) Closed() bool { return c.conn.Closed() }

// OnMessage implements transport.Handler: an SSE client sends nothing.
func (c *client) OnMessage(*transport.Conn, bool, []byte) {}

// OnClose implements transport.Handler: the connection is gone.
func (c *client) OnClose(_ *transport.Conn, info transport.CloseInfo) {
	c.ep.cfg.Hub.Remove(&c.Client, info.Code, info.Dropped)
}

// catchUp ends the client's hold: emit gets what the client missed (the
// replay), then the live messages the hold kept that the replay does not
// cover, and whether its live messages exceeded its send queue before it
// was attached. emit runs before any later live message reaches the
// client's Sink. Without a hold (history off) emit gets nothing.
func (e *Endpoint) catchUp(c *client, snap *admission.Snapshot, emit func(ms []hub.Message, overflow bool)) {
	h := c.hold.Load()
	if h == nil {
		emit(nil, false)
		return
	}
	replay := replayOf(snap, c.User, e.cfg.SendQueueBytes)
	h.Release(snap.NewestOf, func(live []hub.Message, overflow bool) {
		emit(append(replay, live...), overflow)
		c.hold.Store(nil)
	})
}

// replayOf turns the entries a snapshot found into messages, the user's
// stream first. A replay larger than limit is cut to its newest part, and
// the streams cut are marked not recovered: the client reloads instead.
func replayOf(snap *admission.Snapshot, user string, limit int) []hub.Message {
	var out []hub.Message
	add := func(topic bool, name string, st *admission.Stream) {
		for _, en := range st.Tail(limit) {
			out = append(out, hub.Message{Topic: topic, Name: name, Payload: en.Payload, Cursor: en.Cursor, Event: en.Event})
		}
	}
	add(false, user, &snap.User)
	for name, st := range snap.Topics {
		add(true, name, st)
	}
	return out
}

// connectJSON is frame 1: {"kind":"connect","userID":"<id>"}.
func connectJSON(user string) []byte {
	b, _ := json.Marshal(struct {
		Kind   string `json:"kind"`
		UserID string `json:"userID"`
	}{"connect", user})
	return b
}

// streamJSON is where one stream stands in a state frame.
type streamJSON struct {
	Cursor    string `json:"cursor,omitempty"`
	Recovered *bool  `json:"recovered,omitempty"`
}

func streamOf(st *admission.Stream) streamJSON {
	s := streamJSON{Cursor: st.Newest.String()}
	if st.Asked {
		s.Recovered = &st.Recovered
	}
	return s
}

// stateJSON is frame 2: {"kind":"state","state":{...}}; with history also
// the newest cursor of the user's stream, "recovered" when the client asked
// to resume it, and the same per joined topic under "topics".
func stateJSON(snap *admission.Snapshot) []byte {
	v := struct {
		Kind  string            `json:"kind"`
		State map[string]string `json:"state"`
		streamJSON
		Topics map[string]streamJSON `json:"topics,omitempty"`
	}{Kind: "state", State: snap.State}
	if v.State == nil {
		v.State = map[string]string{}
	}
	if snap.History {
		// The client tracks cursors or resumes: where its streams stand.
		v.streamJSON = streamOf(&snap.User)
		if len(snap.Topics) > 0 {
			v.Topics = make(map[string]streamJSON, len(snap.Topics))
			for name, st := range snap.Topics {
				v.Topics[name] = streamOf(st)
			}
		}
	}
	b, _ := json.Marshal(v)
	return b
}

// resumeOf is the resume a request asks for: ?since= and ?since.<topic>=,
// refused (400) when a cursor cannot be read; nothing when history is off.
func (e *Endpoint) resumeOf(res admission.Resume, err error) (admission.Resume, error) {
	if !e.cfg.History {
		return admission.Resume{}, nil
	}
	return res, err
}

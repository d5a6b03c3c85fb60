// Package notifyproto serves the Notify protocol of go-bridget/notify
// (DESIGN.md section 2): the WebSocket at /notify/ws and its Server-Sent
// Events twin at /notify/sse. Frames: connect, state, then every payload
// published to the user or a joined topic, verbatim.
package notifyproto

import (
	"encoding/json"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// Endpoint serves /notify/ws and /notify/sse.
type Endpoint struct {
	accept *admission.Pipeline
	ws     *transport.Server
	hub    *hub.Hub
}

// New returns the endpoint.
func New(accept *admission.Pipeline, ws *transport.Server, h *hub.Hub) *Endpoint {
	return &Endpoint{accept: accept, ws: ws, hub: h}
}

// client is what a /notify/ws and a /notify/sse client share: the hub's entry,
// the transport connection, and its events. A client is one allocation.
type client struct {
	hub.Client
	conn *transport.Conn
	hub  *hub.Hub
}

// Close implements hub.Sink.
func (c *client) Close(code int, reason string) { c.conn.Close(code, reason) }

// Closed implements hub.Sink.
func (c *client) Closed() bool { return c.conn.Closed() }

// OnMessage implements transport.Handler: client data frames are read and
// ignored (the connection is created without collecting them).
func (c *client) OnMessage(*transport.Conn, bool, []byte) {}

// OnClose implements transport.Handler: the connection is gone.
func (c *client) OnClose(_ *transport.Conn, info transport.CloseInfo) {
	c.hub.Remove(&c.Client, info.Code, info.Dropped)
}

// connectJSON is frame 1: {"kind":"connect","userID":"<id>"}.
func connectJSON(user string) []byte {
	b, _ := json.Marshal(struct {
		Kind   string `json:"kind"`
		UserID string `json:"userID"`
	}{"connect", user})
	return b
}

// stateJSON is frame 2: {"kind":"state","state":{...}}.
func stateJSON(state map[string]string) []byte {
	if state == nil {
		state = map[string]string{}
	}
	b, _ := json.Marshal(struct {
		Kind  string            `json:"kind"`
		State map[string]string `json:"state"`
	}{"state", state})
	return b
}

package notifyproto

import (
	"net/http"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// wsClient is a /notify/ws connection.
type wsClient struct{ client }

var (
	_ hub.Sink          = (*wsClient)(nil)
	_ transport.Handler = (*wsClient)(nil)
)

// Deliver implements hub.Sink: the payload verbatim, in a text frame when it
// is valid UTF-8, else a binary one; built once per message.
func (c *wsClient) Deliver(m *hub.Message, direct bool) bool {
	return c.conn.Push(m.Frame(hub.FormatWebSocket, wsFrame), direct)
}

func wsFrame(m *hub.Message) []byte { return transport.DataFrame(m.Payload) }

// ServeWS is GET /notify/ws: admit (refusals before the upgrade), register
// and read the state, upgrade, then hand the socket to an event loop with
// the connect and state frames first.
func (e *Endpoint) ServeWS(w http.ResponseWriter, r *http.Request) {
	a, ok := e.accept.Admit(w, r, admission.Request{Token: e.accept.Token(r), Upgrade: true, Topics: true})
	if !ok {
		return
	}
	c := &wsClient{client{Client: hub.Client{User: a.Claims.UserID, Via: a.Via, Transport: hub.TransportWebSocket}, hub: e.hub}}
	c.Sink = c
	c.conn = e.ws.NewConn(transport.ConnOptions{Expiry: a.Claims.ExpiresAt, Handler: c})
	state, ok := e.accept.Register(w, r, &c.Client, a.Topics)
	if !ok {
		return
	}
	nc, buffered, ok := e.accept.Upgrade(w, r, &c.Client, nil)
	if !ok {
		return
	}
	e.accept.Attach(r, &c.Client, c.conn, nc, buffered,
		transport.TextFrame(connectJSON(c.User)), transport.TextFrame(stateJSON(state)))
}

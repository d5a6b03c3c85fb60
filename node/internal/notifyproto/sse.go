package notifyproto

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// sseClient is a /notify/sse connection.
type sseClient struct{ client }

var (
	_ hub.Sink          = (*sseClient)(nil)
	_ transport.Handler = (*sseClient)(nil)
)

// Deliver implements hub.Sink: a "message" event; built once per message.
func (c *sseClient) Deliver(m *hub.Message, direct bool) bool {
	return c.conn.Push(m.Frame(hub.FormatSSE, sseMessage), direct)
}

func sseMessage(m *hub.Message) []byte { return sseEvent("message", m.Payload) }

// sseRaw makes an event-stream connection of the event loop: a comment every
// ping interval keeps proxies from timing it out, and a "close" event tells
// the client why the server ends it (EventSource then reconnects by itself).
var sseRaw = &transport.RawOptions{
	Ping: []byte(": ping\n\n"),
	Close: func(code int, reason string) []byte {
		b, _ := json.Marshal(struct {
			Code   int    `json:"code"`
			Reason string `json:"reason"`
		}{code, reason})
		return sseEvent("close", string(b))
	},
}

// sseRetry tells EventSource how long to wait before it reconnects.
const sseRetry = "retry: 3000\n\n"

// ServeSSE is GET /notify/sse: Server-Sent Events with the admission and
// relay of /notify/ws; events "connect", "state", then "message" per
// publish. After the response head the socket is the event loop's, like a
// WebSocket. EventSource sets no headers, so the token comes from the
// authorization query parameter or the session cookie.
func (e *Endpoint) ServeSSE(w http.ResponseWriter, r *http.Request) {
	a, ok := e.accept.Admit(w, r, admission.Request{Token: e.accept.Token(r), Topics: true})
	if !ok {
		return
	}
	c := &sseClient{client{Client: hub.Client{User: a.Claims.UserID, Via: a.Via, Transport: hub.TransportSSE}, hub: e.hub}}
	c.Sink = c
	c.conn = e.ws.NewConn(transport.ConnOptions{Expiry: a.Claims.ExpiresAt, Handler: c, Raw: sseRaw})
	state, ok := e.accept.Register(w, r, &c.Client, a.Topics)
	if !ok {
		return
	}
	nc, ok := e.accept.Hijack(w, r, &c.Client)
	if !ok {
		return
	}
	// The body runs until the connection closes: no length, no chunks, so
	// the event loop writes events as they are.
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache, no-store\r\n" +
		"X-Accel-Buffering: no\r\nX-Notify-Node: " + e.accept.NodeName() + "\r\n\r\n" + sseRetry
	e.accept.Attach(r, &c.Client, c.conn, nc, nil, []byte(head),
		sseEvent("connect", string(connectJSON(c.User))), sseEvent("state", string(stateJSON(state))))
}

// sseEvent is one Server-Sent Event with data as its data, one data line per
// line of data (EventSource joins them back with newlines). Bytes that are
// not UTF-8 cannot travel in an event stream and are replaced.
func sseEvent(event, data string) []byte {
	data = strings.ToValidUTF8(data, "\uFFFD")
	b := make([]byte, 0, len(data)+len(event)+16+6*strings.Count(data, "\n"))
	b = append(append(append(b, "event: "...), event...), '\n')
	for {
		i := strings.IndexAny(data, "\r\n")
		b = append(b, "data: "...)
		if i < 0 {
			b = append(append(b, data...), '\n')
			break
		}
		b = append(append(b, data[:i]...), '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, '\n')
}

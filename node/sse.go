package node

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/transport"
)

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

// sseRetryMillis is the reconnection delay EventSource is told to use.
const sseRetry = "retry: 3000\n\n"

// serveSSE is GET /notify/sse: Server-Sent Events with the auth, topics and
// relay of /notify/ws; events "connect", "state", then "message" per publish.
// After the response head the socket is the event loop's, like a WebSocket.
func (n *Node) serveSSE(w http.ResponseWriter, r *http.Request) {
	// The token sources of /notify/ws; EventSource sets no headers, so the
	// authorization query parameter or the session cookie.
	token, _ := auth.TokenFromRequest(r, n.cfg.Auth.SessionCookie)
	claims, ok := n.admit(w, r, token)
	if !ok {
		return
	}
	topics, ok := n.topicsOrRefuse(w, r, claims)
	if !ok || n.relayToOwner(w, r, claims.UserID) {
		return
	}
	cl := &client{user: claims.UserID, topics: topics, kind: kindSSE, via: strings.Clone(r.Header.Get(forwardedByHeader))}
	cl.conn = n.ws.NewConn(transport.ConnOptions{Expiry: claims.ExpiresAt, Tag: cl, Raw: sseRaw})
	state, ok := n.registerAndReadState(w, r, cl)
	if !ok {
		return
	}
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		n.hub.remove(cl)
		return
	}
	// The body runs until the connection closes: no length, no chunks, so
	// the event loop writes events as they are.
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache, no-store\r\n" +
		"X-Accel-Buffering: no\r\nX-Notify-Node: " + n.cfg.NodeName + "\r\n\r\n" + sseRetry
	n.attach(cl, nc, nil, []byte(head), sseEvent("connect", string(connectJSON(cl.user))), sseEvent("state", string(stateJSON(state))))
}

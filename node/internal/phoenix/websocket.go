package phoenix

import (
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// wsSocket is a Phoenix socket on a WebSocket connection.
type wsSocket struct {
	socket
	conn *transport.Conn
}

var (
	_ output                   = (*wsSocket)(nil)
	_ transport.Handler        = (*wsSocket)(nil)
	_ transport.ExpiryNotifier = (*wsSocket)(nil)
)

func (s *wsSocket) send(frame []byte, direct bool, b *transport.Batch) bool {
	return s.conn.PushBatch(frame, direct, b)
}
func (s *wsSocket) close(code int, reason string) { s.conn.Close(code, reason) }
func (s *wsSocket) closed() bool                  { return s.conn.Closed() }
func (s *wsSocket) setExpiry(t time.Time)         { s.conn.SetExpiry(t) }

// OnExpiring implements transport.ExpiryNotifier: an "expiring" push with
// {"exp": <unix seconds>} on every joined topic, NOTIFY_REFRESH_NOTICE
// ahead, so that the client refreshes in time.
func (s *wsSocket) OnExpiring(_ *transport.Conn, exp time.Time) { s.expiring(exp) }

// OnMessage implements transport.Handler: a client message. Input that is
// not a Phoenix message ends the connection with 1007: there is no ref to
// reply to.
func (s *wsSocket) OnMessage(_ *transport.Conn, text bool, b []byte) {
	var m message
	var err error
	if text {
		m, err = decodeText(s.vsn1, b)
	} else {
		m, err = decodeBinary(b)
	}
	if err != nil {
		s.conn.Close(transport.CloseInvalidPayload, "malformed Phoenix message")
		return
	}
	s.handle(m)
}

// OnClose implements transport.Handler.
func (s *wsSocket) OnClose(_ *transport.Conn, info transport.CloseInfo) {
	s.ep.cfg.Hub.Remove(&s.Client, info.Code, info.Dropped)
}

// ServeWebSocket is GET /pubsub/websocket: the admission and relay of every
// client endpoint; after the upgrade the client joins topics with phx_join.
func (e *Endpoint) ServeWebSocket(w http.ResponseWriter, r *http.Request) {
	vsn1, ok := e.vsn(w, r)
	if !ok {
		return
	}
	token, subprotocol := e.token(r)
	a, ok := e.cfg.Accept.Admit(w, r, admission.Request{Token: token, Upgrade: true, Phoenix: true})
	if !ok {
		return
	}
	s := &wsSocket{}
	s.init(e, a, vsn1, hub.TransportPhoenix, s)
	s.conn = e.cfg.Transport.NewConn(transport.ConnOptions{Expiry: e.cfg.Accept.Expiry(a.Claims.ExpiresAt), Messages: true, Handler: s})
	if !e.cfg.Accept.AddClient(w, &s.Client, false, nil) { // joins come with phx_join
		return
	}
	var hdr http.Header
	if subprotocol {
		// phoenix.js offers ["phoenix", "base64url.bearer.phx.<token>"]; a
		// browser fails the connection unless one is selected.
		hdr = http.Header{"Sec-WebSocket-Protocol": {"phoenix"}}
	}
	nc, buffered, response, ok := e.cfg.Accept.Upgrade(w, r, &s.Client, hdr)
	if !ok {
		return
	}
	e.cfg.Accept.Attach(r, &s.Client, s.conn, nc, buffered, response)
}

const tokenProtocol = "base64url.bearer.phx."

// token finds a Phoenix client's token: the token query parameter (the
// Elixir service's, sent as socket params; the first one, as long-poll
// appends its session token after it), phoenix.js's authToken (header
// X-Phoenix-AuthToken on long-poll, a subprotocol on WebSocket), then the
// sources of /notify/ws.
func (e *Endpoint) token(r *http.Request) (token string, subprotocol bool) {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if enc, ok := strings.CutPrefix(p, tokenProtocol); ok {
				subprotocol = true
				if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(enc, "=")); err == nil {
					token = string(b)
				} else if b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "=")); err == nil {
					token = string(b)
				}
			} else if p == "phoenix" {
				subprotocol = true
			}
		}
	}
	if q := r.URL.Query()["token"]; len(q) > 0 && q[0] != "" {
		return q[0], subprotocol
	}
	if h := r.Header.Get("X-Phoenix-AuthToken"); h != "" {
		return h, subprotocol
	}
	if token != "" {
		return token, subprotocol
	}
	return e.cfg.Accept.Token(r), subprotocol
}

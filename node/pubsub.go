package node

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/transport"
)

// servePhoenixWS is GET /pubsub/websocket: a Phoenix Channels socket over
// WebSocket. The same checks and relay as /notify/ws; after the upgrade the
// client joins topics with phx_join (phoenix.go).
func (n *Node) servePhoenixWS(w http.ResponseWriter, r *http.Request) {
	if err := transport.CheckUpgrade(r); err != nil {
		ue, _ := transport.IsUpgradeError(err)
		n.refuse(w, ue.Status, rejectBadRequest, ue.Msg)
		return
	}
	vsn1, ok := n.phoenixVsn(w, r)
	if !ok {
		return
	}
	token, subprotocol := phoenixToken(r, n.cfg.Auth.SessionCookie)
	claims, ok := n.admit(w, r, token)
	if !ok || n.relayToOwner(w, r, claims.UserID) {
		return
	}
	cl := &client{user: claims.UserID, kind: kindPhoenix, via: strings.Clone(r.Header.Get(forwardedByHeader))}
	cl.conn = n.ws.NewConn(transport.ConnOptions{Expiry: claims.ExpiresAt, Messages: true, Tag: cl})
	cl.phx = newPhxSocket(n, cl, vsn1, claims, wsOut{cl.conn})
	n.registerPhoenix(cl.phx)
	hdr := http.Header{"X-Notify-Node": {n.cfg.NodeName}}
	if subprotocol {
		// phoenix.js offers ["phoenix", "base64url.bearer.phx.<token>"]; a
		// browser fails the connection unless one is selected.
		hdr.Set("Sec-WebSocket-Protocol", "phoenix")
	}
	nc, buffered, err := transport.Upgrade(w, r, hdr)
	if err != nil {
		n.forget(cl)
		n.metrics.rejected.WithLabelValues(rejectUpgrade).Inc()
		return
	}
	n.attach(cl, nc, buffered)
}

// phoenixVsn reads the serializer version: 2.0.0 (arrays, phoenix.js's
// default) or 1.0.0 (objects, older ports).
func (n *Node) phoenixVsn(w http.ResponseWriter, r *http.Request) (vsn1, ok bool) {
	switch v := r.URL.Query().Get("vsn"); v {
	case "", "2.0.0":
		return false, true
	case "1.0.0":
		return true, true
	default:
		n.refuse(w, http.StatusBadRequest, rejectBadRequest, "unsupported vsn "+quote(v)+": 2.0.0 or 1.0.0")
		return false, false
	}
}

const phoenixTokenProtocol = "base64url.bearer.phx."

// phoenixToken finds a Phoenix client's token: the token query parameter
// (the Elixir service's, sent as socket params; the first one, as long-poll
// appends its session token after it), phoenix.js's authToken (header
// X-Phoenix-AuthToken on long-poll, a subprotocol on WebSocket), then the
// sources of /notify/ws.
func phoenixToken(r *http.Request, cookie string) (token string, subprotocol bool) {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if enc, ok := strings.CutPrefix(p, phoenixTokenProtocol); ok {
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
	token, _ = auth.TokenFromRequest(r, cookie)
	return token, subprotocol
}

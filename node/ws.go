package node

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/internal/flagext"
	"github.com/notify-dev/notify/transport"
)

// Limits on what one connection may ask for.
const (
	maxTopicsPerConn = 64
	maxTopicLen      = 256
	stateReadTimeout = 5 * time.Second
)

// serveWS is GET /notify/ws, the Notify protocol (DESIGN.md section 2):
// refuse before upgrading, relay to the owner if another node owns the user,
// register, read state, upgrade, then hand the socket to the event loop with
// the connect and state frames first.
func (n *Node) serveWS(w http.ResponseWriter, r *http.Request) {
	if err := transport.CheckUpgrade(r); err != nil {
		ue, _ := transport.IsUpgradeError(err)
		if ue.Status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		n.refuse(w, ue.Status, rejectBadRequest, ue.Msg)
		return
	}
	token, _ := auth.TokenFromRequest(r, n.cfg.Auth.SessionCookie)
	claims, ok := n.admit(w, r, token)
	if !ok {
		return
	}
	topics, ok := n.topicsOrRefuse(w, r, claims)
	if !ok || n.relayToOwner(w, r, claims.UserID) {
		return
	}
	cl := &client{user: claims.UserID, topics: topics, via: strings.Clone(r.Header.Get(forwardedByHeader))}
	cl.conn = n.ws.NewConn(transport.ConnOptions{Expiry: claims.ExpiresAt, Tag: cl})
	state, ok := n.registerAndReadState(w, r, cl)
	if !ok {
		return
	}
	hdr := http.Header{"X-Notify-Node": {n.cfg.NodeName}}
	nc, buffered, err := transport.Upgrade(w, r, hdr)
	if err != nil {
		n.hub.remove(cl)
		n.metrics.rejected.WithLabelValues(rejectUpgrade).Inc()
		n.log.Debug("upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	n.attach(cl, nc, buffered, connectFrame(cl.user), stateFrame(state))
}

// admit runs the checks every client endpoint shares: draining, Origin, the
// token. It answers the refusal itself.
func (n *Node) admit(w http.ResponseWriter, r *http.Request, token string) (auth.Claims, bool) {
	if n.draining.Load() {
		n.refuse(w, http.StatusServiceUnavailable, rejectDraining, "node is draining, reconnect to another node")
		return auth.Claims{}, false
	}
	if !n.originAllowed(r) {
		n.refuse(w, http.StatusForbidden, rejectOrigin, "origin not allowed")
		return auth.Claims{}, false
	}
	claims, err := n.verifier.Verify(token)
	if err != nil {
		n.refuse(w, http.StatusUnauthorized, rejectUnauthorized, err.Error())
		return auth.Claims{}, false
	}
	return claims, true
}

func (n *Node) topicsOrRefuse(w http.ResponseWriter, r *http.Request, claims auth.Claims) ([]topicRef, bool) {
	topics, err := n.topicsFor(r, claims)
	if err != nil {
		var fe forbiddenError
		if errors.As(err, &fe) {
			n.refuse(w, http.StatusForbidden, rejectTopic, err.Error())
		} else {
			n.refuse(w, http.StatusBadRequest, rejectBadRequest, err.Error())
		}
		return nil, false
	}
	return topics, true
}

// relayToOwner relays the request to the user's owner when that is another
// node and the request was not relayed already. It reports whether the
// request was handled; false means serve it here.
//
// A relayed request is served where it lands, never relayed again (no
// loops). If this node's ring names another owner, the relaying node's ring
// was out of date: the rebalance then looks again shortly and moves the
// client once the views agree.
func (n *Node) relayToOwner(w http.ResponseWriter, r *http.Request, user string) bool {
	if r.Header.Get(forwardedByHeader) != "" {
		if owner, _ := n.ownerOf(user); owner != "" {
			select {
			case n.rebalanceRecheck <- struct{}{}:
			default:
			}
		}
		return false
	}
	owner, addr := n.ownerOf(user)
	return owner != "" && n.forward(w, r, owner, addr)
}

// registerAndReadState registers cl before its state is read: a message
// published from here on queues behind the state frame and is not lost.
func (n *Node) registerAndReadState(w http.ResponseWriter, r *http.Request, cl *client) (map[string]string, bool) {
	n.hub.add(cl)
	ctx, cancel := context.WithTimeout(r.Context(), stateReadTimeout)
	state, err := n.state.GetState(ctx, cl.user)
	cancel()
	if err != nil {
		n.hub.remove(cl)
		n.log.Warn("state read failed; connection refused", "user", cl.user, "err", err)
		n.refuse(w, http.StatusServiceUnavailable, rejectState, "state store unavailable, retry later")
		return nil, false
	}
	return state, true
}

// attach hands an upgraded (or hijacked) connection to the event loop.
func (n *Node) attach(cl *client, nc net.Conn, buffered []byte, first ...[]byte) {
	m := n.metrics.transport(cl.kind)
	topics := len(cl.topics) // cl belongs to the event loop once attached
	n.conns.Add(1)
	m.connections.Inc()
	if err := n.ws.Attach(cl.conn, nc, buffered, first...); err != nil {
		n.forget(cl)
		n.connClosed()
		m.connections.Dec()
		n.metrics.rejected.WithLabelValues(rejectUpgrade).Inc()
		n.log.Warn("attach failed", "remote", nc.RemoteAddr(), "err", err)
		return
	}
	m.accepted.Inc()
	n.log.Debug("connected", "user", cl.user, "transport", m.name, "topics", topics)
}

// forget unregisters a client that is gone.
func (n *Node) forget(cl *client) {
	n.hub.remove(cl)
	if cl.phx != nil {
		n.unregisterPhoenix(cl.phx)
	}
}

// refuse answers a handshake with the contract's JSON error.
func (n *Node) refuse(w http.ResponseWriter, status int, reason, msg string) {
	n.metrics.rejected.WithLabelValues(reason).Inc()
	writeError(w, status, msg)
}

// writeError writes {"error":{"message":msg}}.
func writeError(w http.ResponseWriter, status int, msg string) {
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Message = msg
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// originAllowed: browsers send Origin; with an allowlist set it must match.
// Clients that send none (servers, mobile apps) are not browsers and pass.
func (n *Node) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if len(n.origins) == 0 || origin == "" {
		return true
	}
	p, err := parseOriginPattern(origin)
	if err != nil || p.wildcard {
		return false
	}
	for _, o := range n.origins {
		if o.match(p.scheme, p.host) {
			return true
		}
	}
	return false
}

type forbiddenError string

func (e forbiddenError) Error() string { return string(e) }

// topicsFor parses the topic query parameters (names separated by commas or
// spaces, the parameter may repeat) and checks each against the token.
func (n *Node) topicsFor(r *http.Request, claims auth.Claims) ([]topicRef, error) {
	var topics []topicRef
	for _, v := range r.URL.Query()["topic"] {
		for _, t := range flagext.SplitList(v) {
			if slices.ContainsFunc(topics, func(r topicRef) bool { return r.name == t }) {
				continue
			}
			if len(t) > maxTopicLen {
				return nil, errors.New("topic name longer than 256 bytes")
			}
			if !n.cfg.OpenTopics && !claims.Allows(t) {
				return nil, forbiddenError("topic " + quote(t) + " not allowed by the token")
			}
			// A copy: t is part of the request line, which would otherwise
			// stay alive as long as the connection.
			topics = append(topics, topicRef{name: strings.Clone(t)})
		}
	}
	if len(topics) > maxTopicsPerConn {
		return nil, errors.New("more than 64 topics")
	}
	return topics, nil
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// connectFrame is frame 1: {"kind":"connect","userID":"<id>"}.
func connectFrame(user string) []byte { return transport.TextFrame(connectJSON(user)) }

// stateFrame is frame 2: {"kind":"state","state":{...}}.
func stateFrame(state map[string]string) []byte { return transport.TextFrame(stateJSON(state)) }

func connectJSON(user string) []byte {
	b, _ := json.Marshal(struct {
		Kind   string `json:"kind"`
		UserID string `json:"userID"`
	}{"connect", user})
	return b
}

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

// wsEvents receives the transport's connection events for the node.
type wsEvents struct{ n *Node }

var _ transport.Handler = wsEvents{}

// OnMessage runs the messages of Phoenix clients; /notify/ws connections
// do not collect theirs (they are read and ignored).
func (e wsEvents) OnMessage(c *transport.Conn, text bool, payload []byte) {
	if cl := c.Tag().(*client); cl.phx != nil {
		cl.phx.onFrame(text, payload)
	}
}

// OnClose runs on the event loop when a connection is gone.
func (e wsEvents) OnClose(c *transport.Conn, info transport.CloseInfo) {
	n := e.n
	cl := c.Tag().(*client)
	n.forget(cl)
	n.metrics.transport(cl.kind).connections.Dec()
	n.metrics.disconnect(info.Code)
	if info.Dropped > 0 {
		n.metrics.droppedSlow.Add(float64(info.Dropped))
		n.log.Info("slow consumer cut", "user", cl.user, "dropped", info.Dropped)
	}
	n.connClosed()
}

func (n *Node) connClosed() {
	if n.conns.Add(-1) == 0 {
		n.signalDrained()
	}
}

// signalDrained wakes a drain waiting for the last connection or relay.
func (n *Node) signalDrained() {
	if n.draining.Load() {
		select {
		case n.connsZero <- struct{}{}:
		default:
		}
	}
}

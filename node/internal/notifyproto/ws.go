package notifyproto

import (
	"net/http"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// wsClient is a /notify/ws connection.
type wsClient struct {
	client
	envelope bool // ?envelope=1: message frames with cursors
}

var (
	_ hub.Sink                 = (*wsClient)(nil)
	_ transport.Handler        = (*wsClient)(nil)
	_ transport.ExpiryNotifier = (*wsClient)(nil)
)

// OnMessage implements transport.Handler: a refresh frame is answered,
// every other client frame is ignored.
func (c *wsClient) OnMessage(conn *transport.Conn, text bool, payload []byte) {
	if text {
		c.refresh(conn, payload)
	}
}

// Deliver implements hub.Sink: the message in the client's format, built
// once per message for every client of that format.
func (c *wsClient) Deliver(m *hub.Message, direct bool) bool {
	if c.held(m) {
		return true
	}
	if !c.envelope {
		if f := m.SharedFrame(hub.FormatWebSocket, wsSharedFrame); f != nil {
			return c.conn.PushShared(f, direct, m.Batch)
		}
	}
	return c.conn.PushBatch(c.frame(m), direct, m.Batch)
}

func (c *wsClient) frame(m *hub.Message) []byte {
	if c.envelope {
		return m.Frame(hub.FormatEnvelope, envelopeFrame)
	}
	return m.Frame(hub.FormatWebSocket, wsFrame)
}

// ServeWS is GET /notify/ws: admit (refusals before the upgrade), register
// and read the snapshot (state, and where the client's streams stand),
// upgrade, then hand the socket to an event loop with the connect and state
// frames first, then what the client missed, then live messages.
func (e *Endpoint) ServeWS(w http.ResponseWriter, r *http.Request) {
	a, ok := e.cfg.Accept.Admit(w, r, admission.Request{Token: e.cfg.Accept.Token(r), Upgrade: true, Topics: true})
	if !ok {
		return
	}
	res, err := e.resumeOf(admission.ParseResume(r, a.Topics))
	if err != nil {
		e.cfg.Accept.Refuse(w, http.StatusBadRequest, admission.RejectBadRequest, err.Error())
		return
	}
	envelope := envelopeAsked(r)
	res.Track = envelope && e.cfg.History
	c := &wsClient{client: client{Client: hub.Client{User: a.Claims.UserID, Via: a.Via, Transport: hub.TransportWebSocket}, ep: e},
		envelope: envelope}
	c.Sink = c
	c.conn = e.cfg.Transport.NewConn(transport.ConnOptions{Expiry: e.cfg.Accept.Expiry(a.Claims.ExpiresAt), Messages: true, Handler: c})
	if e.cfg.History && res.Reads() {
		c.hold.Store(hub.NewHold(e.cfg.SendQueueBytes))
	}
	snap, ok := e.cfg.Accept.Register(w, r, &c.Client, a.Topics, res)
	if !ok {
		return
	}
	first := [][]byte{transport.TextFrame(connectJSON(c.User)), nil}
	var overflow bool
	e.catchUp(&c.client, snap, func(ms []hub.Message, over bool) {
		for i := range ms {
			first = append(first, c.frame(&ms[i]))
		}
		overflow = over
	})
	first[1] = transport.TextFrame(stateJSON(snap)) // after the replay was cut to size
	nc, buffered, response, ok := e.cfg.Accept.Upgrade(w, r, &c.Client, nil)
	if !ok {
		return
	}
	e.cfg.Accept.Attach(r, &c.Client, c.conn, nc, buffered, response, first...)
	if overflow {
		c.conn.Close(transport.CloseSlowConsumer, "slow consumer")
	}
}

// envelopeAsked: ?envelope=1 (or true).
func envelopeAsked(r *http.Request) bool {
	switch admission.Query(r).Get("envelope") {
	case "1", "true":
		return true
	}
	return false
}

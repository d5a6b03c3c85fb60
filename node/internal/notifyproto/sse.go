package notifyproto

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// sseClient is a /notify/sse connection.
type sseClient struct {
	client
	// pos is where a stream with topics stands in each of its streams
	// (history on): its event ids carry them all. nil otherwise: an event's
	// id is its own cursor, the same bytes for every client.
	pos *ssePositions
}

var (
	_ hub.Sink          = (*sseClient)(nil)
	_ transport.Handler = (*sseClient)(nil)
)

// Deliver implements hub.Sink: a "message" event; built once per message.
func (c *sseClient) Deliver(m *hub.Message, direct bool) bool {
	if c.held(m) {
		return true
	}
	if c.pos == nil || m.Cursor.IsZero() {
		return c.conn.PushBatch(m.Frame(hub.FormatSSE, sseMessage), direct, m.Batch)
	}
	c.pos.advance(m) // deliveries to one client come one at a time
	return c.conn.PushBatch(c.pos.idLine(), direct, m.Batch) && c.conn.PushBatch(m.Frame(hub.FormatSSEData, sseData), direct, m.Batch)
}

// frames are the event of m for this client: its id line when the client
// writes its own, then the event.
func (c *sseClient) frames(m *hub.Message) [][]byte {
	if c.pos == nil || m.Cursor.IsZero() {
		return [][]byte{sseMessage(m)}
	}
	c.pos.advance(m)
	return [][]byte{c.pos.idLine(), sseData(m)}
}

// sseMessage is a "message" event with the message's cursor as its id
// (when it has one), so that EventSource's Last-Event-ID resumes from it.
func sseMessage(m *hub.Message) []byte {
	if m.Cursor.IsZero() {
		return sseEvent("message", m.Payload)
	}
	return append([]byte("id: "+m.Cursor.String()+"\n"), sseData(m)...)
}

// sseData is the "message" event without an id line.
func sseData(m *hub.Message) []byte { return sseEvent("message", m.Payload) }

// ssePositions is where an event stream with topics stands in each of its
// streams. Its id, "<user cursor>" then " <topic>=<cursor>" per topic with
// one ("-" for a user stream without a cursor yet), is what EventSource
// sends back as Last-Event-ID.
type ssePositions struct {
	user   broker.Cursor
	topics map[string]broker.Cursor
}

func (p *ssePositions) advance(m *hub.Message) {
	if m.Topic {
		// A copy: m.Name may be a view of the broker's buffer, and a map
		// assignment replaces an equal key's string too.
		p.topics[strings.Clone(m.Name)] = m.Cursor
	} else {
		p.user = m.Cursor
	}
}

func (p *ssePositions) idLine() []byte {
	id := p.user.String()
	if id == "" {
		id = "-"
	}
	names := make([]string, 0, len(p.topics))
	for name := range p.topics {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		id += " " + name + "=" + p.topics[name].String()
	}
	return []byte("id: " + id + "\n")
}

// positionsOf starts the positions of a client with topics at what its
// snapshot read.
func positionsOf(snap *admission.Snapshot) *ssePositions {
	p := &ssePositions{user: snap.User.Newest, topics: make(map[string]broker.Cursor, len(snap.Topics))}
	for name, st := range snap.Topics {
		if !st.Newest.IsZero() {
			p.topics[name] = st.Newest
		}
	}
	return p
}

// parseEventID reads a Last-Event-ID: a cursor of the user's stream, or the
// positions of a stream with topics (only those the client joins count).
func parseEventID(id string, topics []string) (admission.Resume, error) {
	res := admission.Resume{Topics: map[string]admission.Since{}}
	fields := strings.Fields(id)
	if len(fields) == 0 {
		return res, nil
	}
	if fields[0] != "-" {
		c, err := broker.ParseCursor(fields[0])
		if err != nil {
			return admission.Resume{}, err
		}
		res.User = admission.Since{Cursor: c, Asked: true}
	}
	for _, f := range fields[1:] {
		name, cur, ok := strings.Cut(f, "=")
		c, err := broker.ParseCursor(cur)
		if !ok || err != nil {
			return admission.Resume{}, broker.ErrBadCursor
		}
		if slices.Contains(topics, name) {
			res.Topics[name] = admission.Since{Cursor: c, Asked: true}
		}
	}
	return res, nil
}

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
// publish, each with its cursor as id when it has one. It resumes from
// ?since= (and ?since.<topic>=) or, as EventSource reconnects, from the
// Last-Event-ID header. After the response head the socket is the event
// loop's, like a WebSocket. EventSource sets no headers of its own, so the
// token comes from the authorization query parameter or the session cookie.
func (e *Endpoint) ServeSSE(w http.ResponseWriter, r *http.Request) {
	a, ok := e.cfg.Accept.Admit(w, r, admission.Request{Token: e.cfg.Accept.Token(r), Topics: true})
	if !ok {
		return
	}
	res, err := e.resumeOf(sseResume(r, a.Topics))
	if err != nil {
		e.cfg.Accept.Refuse(w, http.StatusBadRequest, admission.RejectBadRequest, err.Error())
		return
	}
	c := &sseClient{client: client{Client: hub.Client{User: a.Claims.UserID, Via: a.Via, Transport: hub.TransportSSE}, ep: e}}
	c.Sink = c
	c.conn = e.cfg.Transport.NewConn(transport.ConnOptions{Expiry: e.cfg.Accept.Expiry(a.Claims.ExpiresAt), Handler: c, Raw: sseRaw})
	res.Track = e.cfg.History // events carry ids: EventSource resumes from them
	if e.cfg.History {
		c.hold.Store(hub.NewHold(e.cfg.SendQueueBytes))
	}
	snap, ok := e.cfg.Accept.Register(w, r, &c.Client, a.Topics, res)
	if !ok {
		return
	}
	var events [][]byte
	var overflow bool
	e.catchUp(&c.client, snap, func(ms []hub.Message, over bool) {
		if snap.History && len(a.Topics) > 0 {
			c.pos = positionsOf(snap)
		}
		for i := range ms {
			events = append(events, c.frames(&ms[i])...)
		}
		overflow = over
	})
	nc, ok := e.cfg.Accept.Hijack(w, r, &c.Client)
	if !ok {
		return
	}
	// The body runs until the connection closes: no length, no chunks, so
	// the event loop writes events as they are.
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache, no-store\r\n" +
		"X-Accel-Buffering: no\r\nX-Notify-Node: " + e.cfg.Accept.NodeName() + "\r\n\r\n" + sseRetry
	first := append([][]byte{sseEvent("connect", string(connectJSON(c.User))), e.stateEvent(c, snap)}, events...)
	e.cfg.Accept.Attach(r, &c.Client, c.conn, nc, nil, []byte(head), first...)
	if overflow {
		c.conn.Close(transport.CloseSlowConsumer, "slow consumer")
	}
}

// stateEvent is the "state" event; with history it carries, as its id,
// where the client stands before any message, so that an EventSource that
// drops before its first message still resumes with Last-Event-ID.
func (e *Endpoint) stateEvent(c *sseClient, snap *admission.Snapshot) []byte {
	ev := sseEvent("state", string(stateJSON(snap)))
	switch {
	case !snap.History:
		return ev
	case c.pos != nil:
		return append(positionsOf(snap).idLine(), ev...)
	}
	return append([]byte("id: "+snap.User.Newest.String()+"\n"), ev...)
}

// sseResume is the resume an event stream asks for: the query parameters
// (a first connect that knows where it was), overridden, for every stream
// it names, by the Last-Event-ID header of an EventSource that reconnects.
// The browser reconnects to the URL it was opened with, ?since= included,
// and its Last-Event-ID is where it stands now, further on: resuming from
// the URL's since again would send everything after it a second time.
func sseResume(r *http.Request, topics []string) (admission.Resume, error) {
	res, err := admission.ParseResume(r, topics)
	if err != nil {
		return res, err
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		last, err := parseEventID(id, topics)
		if err != nil {
			return last, err
		}
		if last.User.Asked {
			res.User = last.User
		}
		for name, s := range last.Topics {
			res.Topics[name] = s
		}
	}
	return res, nil
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

package node

import (
	"encoding/json"
	"strings"

	"github.com/notify-dev/notify/transport"
)

// frames builds, lazily and once each, what one published message looks
// like in every protocol, so each is encoded only if a client of that kind
// is among the recipients.
type frames struct {
	payload string
	event   string // Phoenix event; "" = "message"
	topic   bool   // name is a topic (else a user id)
	name    string

	ws, sseFrame []byte
	phxTopic     string
	phx2, phx1   phxFrame
}

// phxFrame is a Phoenix push: the WebSocket frame and, for long-poll, the
// JSON text inside it.
type phxFrame struct {
	frame, text []byte
}

// notify is the /notify/ws frame: the payload verbatim.
func (f *frames) notify() []byte {
	if f.ws == nil {
		f.ws = transport.DataFrame(f.payload)
	}
	return f.ws
}

// sse is a Server-Sent Event "message" with the payload as data, one data
// line per line of the payload (EventSource joins them back with newlines).
// Bytes that are not UTF-8 cannot travel in an event stream and are replaced.
func (f *frames) sse() []byte {
	if f.sseFrame == nil {
		f.sseFrame = sseEvent("message", f.payload)
	}
	return f.sseFrame
}

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

// phoenixTopic is the Phoenix topic the message arrives on: user:<id> or
// group:<name>, as the Elixir service named them.
func (f *frames) phoenixTopic() string {
	if f.phxTopic == "" {
		prefix := "user:"
		if f.topic {
			prefix = "group:"
		}
		f.phxTopic = prefix + f.name
	}
	return f.phxTopic
}

// phoenix is the push for a Phoenix client of the given serializer version.
// The payload is the JSON value when the bytes are JSON, else a string; a
// broadcast carries no join_ref, so one encoding serves every subscriber.
func (f *frames) phoenix(vsn1 bool) phxFrame {
	p := &f.phx2
	if vsn1 {
		p = &f.phx1
	}
	if p.frame == nil {
		event := f.event
		if event == "" {
			event = "message"
		}
		*p = newPhxFrame(vsn1, phxMessage{topic: f.phoenixTopic(), event: event, payload: phoenixPayload(f.payload, f.event != "")})
	}
	return *p
}

// phoenixPayload: published bytes that are JSON travel as that JSON value,
// anything else as a string. An event's message (BroadcastTextMessage) is
// always the string, as the Elixir service sent it.
func phoenixPayload(payload string, asString bool) json.RawMessage {
	if !asString && json.Valid([]byte(payload)) {
		return json.RawMessage(payload)
	}
	b, _ := json.Marshal(strings.ToValidUTF8(payload, "\uFFFD"))
	return b
}

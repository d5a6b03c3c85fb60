package phoenix

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// message is one Phoenix message. Refs are kept as the raw JSON the client
// sent (a string, a number or null), so replies echo them exactly.
type message struct {
	joinRef, ref json.RawMessage
	topic, event string
	payload      json.RawMessage
}

var jsonNull = json.RawMessage("null")

var errMalformed = errors.New("malformed Phoenix message")

// decodeText reads a text message: a JSON array [join_ref, ref, topic,
// event, payload] for vsn 2.0.0, an object for 1.0.0.
func decodeText(vsn1 bool, b []byte) (message, error) {
	var m message
	if vsn1 {
		var o struct {
			Topic   *string         `json:"topic"`
			Event   *string         `json:"event"`
			Payload json.RawMessage `json:"payload"`
			Ref     json.RawMessage `json:"ref"`
			JoinRef json.RawMessage `json:"join_ref"`
		}
		if err := json.Unmarshal(b, &o); err != nil || o.Topic == nil || o.Event == nil {
			return m, errMalformed
		}
		m = message{joinRef: o.JoinRef, ref: o.Ref, topic: *o.Topic, event: *o.Event, payload: o.Payload}
	} else {
		var a []json.RawMessage
		if err := json.Unmarshal(b, &a); err != nil || len(a) != 5 {
			return m, errMalformed
		}
		m = message{joinRef: a[0], ref: a[1], payload: a[4]}
		if json.Unmarshal(a[2], &m.topic) != nil || json.Unmarshal(a[3], &m.event) != nil {
			return m, errMalformed
		}
	}
	if !validRef(m.joinRef) || !validRef(m.ref) {
		return m, errMalformed
	}
	return m, nil
}

// validRef: a ref is null, a string or a number; anything else would be
// echoed into our replies.
func validRef(r json.RawMessage) bool {
	r = bytes.TrimSpace(r)
	if len(r) == 0 || string(r) == "null" {
		return true
	}
	switch r[0] {
	case '"':
		var s string
		return json.Unmarshal(r, &s) == nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var f json.Number
		return json.Unmarshal(r, &f) == nil
	}
	return false
}

// decodeBinary reads phoenix.js's binary push:
// [kind=0][join_ref len][topic len][event len] join_ref topic event payload.
// Only the routing fields matter here; the payload is not used.
func decodeBinary(b []byte) (message, error) {
	if len(b) < 4 || b[0] != 0 {
		return message{}, errMalformed
	}
	jl, tl, el := int(b[1]), int(b[2]), int(b[3])
	if len(b) < 4+jl+tl+el {
		return message{}, errMalformed
	}
	p := b[4:]
	joinRef, _ := json.Marshal(string(p[:jl]))
	m := message{joinRef: joinRef, ref: jsonNull, topic: string(p[jl : jl+tl]), event: string(p[jl+tl : jl+tl+el]), payload: jsonNull}
	if !utf8.ValidString(m.topic) || !utf8.ValidString(m.event) {
		return m, errMalformed
	}
	return m, nil
}

func rawOrNull(r json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(r)) == 0 {
		return jsonNull
	}
	return r
}

// encode writes m in the serializer's format.
func encode(vsn1 bool, m message) []byte {
	topic, _ := json.Marshal(m.topic)
	event, _ := json.Marshal(m.event)
	var b bytes.Buffer
	if vsn1 {
		b.WriteString(`{"topic":`)
		b.Write(topic)
		b.WriteString(`,"event":`)
		b.Write(event)
		b.WriteString(`,"payload":`)
		b.Write(rawOrNull(m.payload))
		b.WriteString(`,"ref":`)
		b.Write(rawOrNull(m.ref))
		b.WriteString(`,"join_ref":`)
		b.Write(rawOrNull(m.joinRef))
		b.WriteByte('}')
		return b.Bytes()
	}
	b.WriteByte('[')
	b.Write(rawOrNull(m.joinRef))
	b.WriteByte(',')
	b.Write(rawOrNull(m.ref))
	b.WriteByte(',')
	b.Write(topic)
	b.WriteByte(',')
	b.Write(event)
	b.WriteByte(',')
	b.Write(rawOrNull(m.payload))
	b.WriteByte(']')
	return b.Bytes()
}

// frame encodes m once, as a WebSocket text frame; a long-poll client gets
// its payload (transport.FramePayload).
func frame(vsn1 bool, m message) []byte { return transport.TextFrame(encode(vsn1, m)) }

// Topics as the Elixir service named them.
const (
	userPrefix  = "user:"
	groupPrefix = "group:"
)

// topicOf is the Phoenix topic a published message arrives on.
func topicOf(m *hub.Message) string {
	if m.Topic {
		return groupPrefix + m.Name
	}
	return userPrefix + m.Name
}

// isTopicOf reports whether topic is the one m arrives on, without building
// that string for every recipient.
func isTopicOf(topic string, m *hub.Message) bool {
	prefix := userPrefix
	if m.Topic {
		prefix = groupPrefix
	}
	return len(topic) == len(prefix)+len(m.Name) && strings.HasPrefix(topic, prefix) && topic[len(prefix):] == m.Name
}

// push2 and push1 build a published message as a push of each serializer:
// a broadcast carries no join_ref, so one encoding serves every subscriber.
func push2(m *hub.Message) []byte { return push(false, m) }
func push1(m *hub.Message) []byte { return push(true, m) }

func push(vsn1 bool, m *hub.Message) []byte {
	event := m.Event
	if event == "" {
		event = "message"
	}
	return frame(vsn1, message{topic: topicOf(m), event: event, payload: payloadJSON(m.Payload, m.Event != "")})
}

// push2Cursor and push1Cursor are the pushes of a join that asked for
// cursors: the payload is {"cursor":"<cursor>","data":<what push sends>}
// (no "cursor" for a message published without history).
func push2Cursor(m *hub.Message) []byte { return pushCursor(false, m) }
func push1Cursor(m *hub.Message) []byte { return pushCursor(true, m) }

func pushCursor(vsn1 bool, m *hub.Message) []byte {
	event := m.Event
	if event == "" {
		event = "message"
	}
	data := payloadJSON(m.Payload, m.Event != "")
	b := make([]byte, 0, len(data)+48)
	b = append(b, '{')
	if !m.Cursor.IsZero() {
		c, _ := json.Marshal(m.Cursor.String())
		b = append(append(append(b, `"cursor":`...), c...), ',')
	}
	b = append(append(append(b, `"data":`...), data...), '}')
	return frame(vsn1, message{topic: topicOf(m), event: event, payload: b})
}

// payloadJSON: published bytes that are JSON travel as that JSON value,
// anything else as a string. An event's message (BroadcastTextMessage) is
// always the string, as the Elixir service sent it.
func payloadJSON(payload string, asString bool) json.RawMessage {
	if !asString && json.Valid([]byte(payload)) {
		return json.RawMessage(payload)
	}
	b, _ := json.Marshal(strings.ToValidUTF8(payload, "\uFFFD"))
	return b
}

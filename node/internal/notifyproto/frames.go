package notifyproto

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"

	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// wsFrame is a message as /notify/ws sends it by default: the payload
// verbatim, in a text frame when it is valid UTF-8, else a binary one.
func wsFrame(m *hub.Message) []byte { return transport.DataFrame(m.Payload) }

// wsSharedFrame is wsFrame in a pooled buffer.
func wsSharedFrame(m *hub.Message, p *transport.FramePool) *transport.SharedFrame {
	return p.DataFrame(m.Payload)
}

// envelopeFrame is a message as /notify/ws?envelope=1 sends it, a text frame
//
//	{"kind":"message","cursor":"<cursor>","topic":"<name>","event":"<event>","data":<payload>}
//
// cursor only for a message with history, topic only for a topic's message,
// event only for a BroadcastTextMessage. data is the payload as its JSON
// value when it is JSON, else as a string; bytes that are not UTF-8 travel
// as "data_base64" instead (standard encoding, padded).
func envelopeFrame(m *hub.Message) []byte { return transport.TextFrame(envelopeJSON(m)) }

func envelopeJSON(m *hub.Message) []byte {
	b := make([]byte, 0, len(m.Payload)+96)
	b = append(b, `{"kind":"message"`...)
	if !m.Cursor.IsZero() {
		b = appendField(b, "cursor", m.Cursor.String())
	}
	if m.Topic {
		b = appendField(b, "topic", m.Name)
	}
	if m.Event != "" {
		b = appendField(b, "event", m.Event)
	}
	switch {
	case !utf8.ValidString(m.Payload):
		b = appendField(b, "data_base64", base64.StdEncoding.EncodeToString([]byte(m.Payload)))
	case m.Event == "" && json.Valid([]byte(m.Payload)):
		b = append(append(b, `,"data":`...), m.Payload...)
	default:
		// An event's message is always the string, as Phoenix clients get it.
		b = appendField(b, "data", m.Payload)
	}
	return append(b, '}')
}

func appendField(b []byte, name, value string) []byte {
	v, _ := json.Marshal(value)
	b = append(append(append(b, `,"`...), name...), `":`...)
	return append(b, v...)
}

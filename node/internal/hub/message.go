package hub

import "github.com/notify-dev/notify/broker"

// Message is one published message on its way to the local clients of its
// target. Each protocol's bytes for it are built once, by the first
// recipient that needs them (Frame), and the same bytes go to every other
// recipient of that protocol.
type Message struct {
	Topic   bool   // Name is a topic; else a user id
	Name    string // the user id or topic name
	Payload string
	// Cursor is the message's entry in its stream's history; zero when it
	// came without history.
	Cursor broker.Cursor
	// Event is the Phoenix event name of a BroadcastTextMessage; "" for an
	// ordinary publish (Phoenix clients get event "message").
	Event string

	frames [numFormats][]byte
}

// Format is one protocol's encoding of a message.
type Format uint8

// The formats a message is delivered in.
const (
	FormatWebSocket Format = iota // /notify/ws: the payload verbatim, one data frame
	FormatSSE                     // /notify/sse: a "message" event
	FormatPhoenix2                // Phoenix push, serializer 2.0.0
	FormatPhoenix1                // Phoenix push, serializer 1.0.0
	numFormats
)

// Frame returns m in format f, encoding it with encode the first time a
// recipient asks for f. The result must not be modified: it goes to every
// recipient of that format.
func (m *Message) Frame(f Format, encode func(*Message) []byte) []byte {
	if m.frames[f] == nil {
		m.frames[f] = encode(m)
	}
	return m.frames[f]
}

func (m *Message) reset() { *m = Message{} }

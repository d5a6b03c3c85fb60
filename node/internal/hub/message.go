package hub

import (
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/transport"
)

// Message is one published message on its way to the local clients of its
// target. Each protocol's bytes for it are built once, by the first
// recipient that needs them (Frame), and the same bytes go to every other
// recipient of that protocol.
//
// Name and Payload are valid only during Sink.Deliver (they may be views of
// the broker's read buffer, see broker.Handler): a Sink that keeps them
// keeps copies (Hold does).
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
	// Batch, when not nil, is where a Sink's connection queues the frame
	// (transport.Conn.PushBatch): the loops are woken once per batch.
	Batch *transport.Batch

	// pool, when not nil, is where SharedFrame builds its frames: the hub
	// sets it for a message to a few connections (a user's).
	pool   *transport.FramePool
	frames [numFormats][]byte
	shared [numFormats]*transport.SharedFrame
}

// Format is one protocol's encoding of a message.
type Format uint8

// The formats a message is delivered in.
const (
	FormatWebSocket      Format = iota // /notify/ws: the payload verbatim, one data frame
	FormatEnvelope                     // /notify/ws?envelope=1: a message frame with its cursor
	FormatSSE                          // /notify/sse: a "message" event (with its id)
	FormatSSEData                      // /notify/sse: the same without the id line (the client writes its own)
	FormatPhoenix2                     // Phoenix push, serializer 2.0.0
	FormatPhoenix1                     // Phoenix push, serializer 1.0.0
	FormatPhoenix2Cursor               // Phoenix push with its cursor (a join that asked for cursors), 2.0.0
	FormatPhoenix1Cursor               // the same, 1.0.0
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

// SharedFrame is Frame in a pooled buffer, for Conn.PushShared: nil when
// the hub gave m no pool (a message to many connections shares Frame's
// bytes; a buffer's one reference count would be taken and given back by
// every loop, on every core). The hub releases its reference after the
// delivery; each connection holds its own while it needs the bytes.
func (m *Message) SharedFrame(f Format, encode func(*Message, *transport.FramePool) *transport.SharedFrame) *transport.SharedFrame {
	if m.pool == nil {
		return nil
	}
	if m.shared[f] == nil {
		m.shared[f] = encode(m, m.pool)
	}
	return m.shared[f]
}

func (m *Message) reset() {
	for _, f := range m.shared {
		if f != nil {
			f.Release()
		}
	}
	*m = Message{}
}

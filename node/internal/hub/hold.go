package hub

import (
	"strings"
	"sync"

	"github.com/notify-dev/notify/broker"
)

// Hold keeps the live messages of a client that is catching up with its
// history: registered before its history is read (so nothing published
// meanwhile is lost), it must get the replay first, then the live messages
// the replay does not already hold. Its Sink offers every message to the
// hold until Release.
type Hold struct {
	mu       sync.Mutex
	held     []Message // copies, without frames
	bytes    int
	limit    int
	overflow bool
	released bool
}

// NewHold returns a hold that keeps at most limit bytes of payload; beyond
// that the client is a slow consumer (Release reports it).
func NewHold(limit int) *Hold { return &Hold{limit: limit} }

// Offer keeps m and reports true until Release; after it, false: the Sink
// delivers m itself.
func (h *Hold) Offer(m *Message) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return false
	}
	if h.bytes += len(m.Payload); h.bytes > h.limit {
		h.overflow = true // keep counting; nothing more is kept
		return true
	}
	h.held = append(h.held, Message{Topic: m.Topic, Name: strings.Clone(m.Name), Payload: strings.Clone(m.Payload), Cursor: m.Cursor, Event: m.Event})
	return true
}

// Release ends the hold. emit gets, under the hold's lock, the messages it
// kept, in arrival order, minus those the replay already covers: a message
// of a stream is dropped when its cursor is of the epoch read and not past
// the newest cursor read (newest maps a stream to what was read of it).
// overflow reports that the client exceeded its limit meanwhile. Live
// messages offered during emit wait for it, so whatever emit sends goes
// out before them.
func (h *Hold) Release(newest func(topic bool, name string) broker.Cursor, emit func(live []Message, overflow bool)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	var live []Message
	for _, m := range h.held {
		if n := newest(m.Topic, m.Name); !m.Cursor.IsZero() && m.Cursor.Epoch == n.Epoch && m.Cursor.Seq <= n.Seq {
			continue
		}
		live = append(live, m)
	}
	h.held = nil
	emit(live, h.overflow)
}

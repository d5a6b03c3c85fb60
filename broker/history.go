package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cursor marks one entry of a stream's history: the stream's epoch, which
// changes whenever its history was lost (expired, flushed), and the entry's
// sequence number in that epoch (1, 2, 3, ...). Cursors of one epoch are
// ordered by Seq. Clients hold the string form, "<epoch>:<seq>", as an
// opaque token.
type Cursor struct {
	Epoch string
	Seq   uint64
}

// IsZero reports whether c is no cursor (a message without history).
func (c Cursor) IsZero() bool { return c.Epoch == "" }

// String is the form clients hold: "<epoch>:<seq>", "" for the zero cursor.
func (c Cursor) String() string {
	if c.IsZero() {
		return ""
	}
	return c.Epoch + ":" + strconv.FormatUint(c.Seq, 10)
}

// ErrBadCursor is wrapped by ParseCursor's errors.
var ErrBadCursor = errors.New("malformed cursor")

// maxEpochLen bounds an epoch: clients send cursors back, and nothing of
// theirs may grow without bound.
const maxEpochLen = 64

// OriginEpoch marks a cursor taken of an empty stream: its Seq is when it
// was taken (unix milliseconds). No stream has this epoch, so a client can
// hold a cursor before the first message, and resume from it.
const OriginEpoch = "0"

// OriginAt is the cursor of an empty stream read at t.
func OriginAt(t time.Time) Cursor { return Cursor{Epoch: OriginEpoch, Seq: uint64(t.UnixMilli())} }

// IsOrigin reports whether c was taken of an empty stream.
func (c Cursor) IsOrigin() bool { return c.Epoch == OriginEpoch }

// ParseCursor reads a cursor's string form; "" is the zero cursor.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	epoch, seq, ok := strings.Cut(s, ":")
	if !ok || epoch == "" || len(epoch) > maxEpochLen || strings.ContainsAny(epoch, ": \t\r\n") {
		return Cursor{}, fmt.Errorf("%w: want <epoch>:<seq>", ErrBadCursor)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || (n == 0 && epoch != OriginEpoch) {
		return Cursor{}, fmt.Errorf("%w: bad sequence number", ErrBadCursor)
	}
	return Cursor{Epoch: epoch, Seq: n}, nil
}

// Message is one published message as the broker hands it to its handler.
type Message struct {
	Payload string
	// Cursor is the message's entry in its stream's history; zero for a
	// message published without history (a plain PUBLISH).
	Cursor Cursor
	// Event is the Phoenix event name of a BroadcastTextMessage; "" for an
	// ordinary publish.
	Event string
}

// Clone returns m with a payload of its own (see Handler.Deliver).
func (m Message) Clone() Message {
	m.Payload = strings.Clone(m.Payload)
	return m
}

// Entry is one message kept in a stream's history.
type Entry struct {
	Cursor  Cursor
	Payload string
	Event   string
}

// HistoryConfig bounds every stream's history.
type HistoryConfig struct {
	// Size is how many entries a stream keeps (NOTIFY_HISTORY_SIZE); 0 turns
	// history off.
	Size int
	// TTL is how long a stream is kept after its last append
	// (NOTIFY_HISTORY_TTL).
	TTL time.Duration
}

// Enabled reports whether history is kept.
func (c HistoryConfig) Enabled() bool { return c.Size > 0 }

// Validate reports a setting out of range.
func (c HistoryConfig) Validate() error {
	switch {
	case c.Size < 0 || c.Size > 100000:
		return fmt.Errorf("invalid NOTIFY_HISTORY_SIZE %d: must be 0 (off) to 100000", c.Size)
	case c.Enabled() && (c.TTL < time.Second || c.TTL > 30*24*time.Hour):
		return fmt.Errorf("invalid NOTIFY_HISTORY_TTL %s: must be 1s to 720h", c.TTL)
	}
	return nil
}

// HistoryRead is what Read found in one stream.
type HistoryRead struct {
	// Entries after the cursor asked for (every entry kept when the cursor
	// was zero or could not be recovered), oldest first.
	Entries []Entry
	// Newest is the stream's newest cursor; zero when the stream is empty.
	Newest Cursor
	// Recovered: the history reaches back to the cursor asked for, so
	// Entries are exactly what came after it. False when the cursor is of
	// another epoch (the history was lost) or entries after it were trimmed
	// or expired; then Entries are what the stream still has.
	Recovered bool
}

// History keeps the recent messages of every user's and topic's stream, in
// the broker, so that a client can resume where it was.
type History interface {
	// Append adds payload (with a Phoenix event name, or "") to the stream of
	// each target and publishes it to every node, atomically per target; it
	// returns each entry's cursor, in the order of targets.
	Append(ctx context.Context, targets []Target, payload []byte, event string) ([]Cursor, error)
	// Read returns what target's stream holds after since (see HistoryRead).
	Read(ctx context.Context, t Target, since Cursor) (HistoryRead, error)
}

// ErrHistoryOff is wrapped by the errors of History's and Handoffs' methods
// on a broker built with history off (HistoryConfig.Size 0).
var ErrHistoryOff = errors.New("history is off (NOTIFY_HISTORY_SIZE=0)")

// ReceivedTTL is the least time a user's Received record is kept after its
// last update (the record's TTL is the larger of this and the history TTL):
// hand-offs claim an entry within NOTIFY_UNDELIVERED_GRACE (seconds) of its
// publish, so minutes are plenty, and the record must not vanish while the
// entries it covers can still be recovered.
const ReceivedTTL = 10 * time.Minute

// receivedTTL is how long a Received record is kept under cfg.
func receivedTTL(cfg HistoryConfig) time.Duration { return max(ReceivedTTL, cfg.TTL) }

// checkHistory reports settings a broker cannot work with. It is looser
// than Validate, which bounds what operators may configure: tests use TTLs
// of a fraction of a second.
func checkHistory(c HistoryConfig) error {
	switch {
	case c.Size < 0 || c.Size > 100000:
		return fmt.Errorf("broker: history size %d out of range 0..100000", c.Size)
	case c.Enabled() && c.TTL < time.Millisecond:
		return fmt.Errorf("broker: history TTL %s below 1ms", c.TTL)
	}
	return nil
}

// historyChannel is the channel, and the name of the stream, of t.
// historyChannels is historyChannel of every target; the first target
// without a name fails them all.
func historyChannels(targets []Target) ([]string, error) {
	channels := make([]string, len(targets))
	for i, t := range targets {
		ch, err := historyChannel(t)
		if err != nil {
			return nil, err
		}
		channels[i] = ch
	}
	return channels, nil
}

func historyChannel(t Target) (string, error) {
	if t.Name == "" {
		return "", errors.New("broker: history of a target without a name")
	}
	if t.Topic {
		return TopicChannel(t.Name), nil
	}
	return UserChannel(t.Name), nil
}

// recoveredFrom reports whether a stream of epoch, whose kept entries run
// from seq first to last (first 0: none), still holds everything after
// since: same epoch, since not past the newest entry, and nothing after
// since trimmed.
func recoveredFrom(since Cursor, epoch string, first, last uint64) bool {
	return !since.IsZero() && since.Epoch == epoch && first > 0 &&
		since.Seq <= last && first <= since.Seq+1
}

// checkEntry refuses a hand-off call without a user or a cursor.
func checkEntry(user string, c Cursor) error {
	if user == "" {
		return errors.New("broker: hand-off without a user")
	}
	if c.IsZero() || c.Seq == 0 {
		return errors.New("broker: hand-off without a cursor")
	}
	return nil
}

// Handoffs coordinates, across nodes, the hand-off of messages nobody
// received to the application: exactly one node hands each one off, and
// none that a connection of the user received.
type Handoffs interface {
	// Received records that connections of user received every entry of the
	// user's stream up to c, live or by recovery.
	Received(ctx context.Context, user string, c Cursor) error
	// Claim reports whether this node is the one to hand off user's entry c:
	// no connection received it (per Received) and no node claimed it
	// before. A claim is kept for ttl.
	Claim(ctx context.Context, user string, c Cursor, ttl time.Duration) (bool, error)
}

// Wire format of a message published with history: the payload on the
// channel starts with historyMagic, then the cursor, the event and the
// payload, separated by NUL bytes. A plain PUBLISH whose payload starts
// with these bytes is read the same way: the prefix is reserved.
const historyMagic = "\x00notify-h1\x00"

// decodeMessage reads a payload received on a user's or topic's channel.
func decodeMessage(p string) Message {
	rest, ok := strings.CutPrefix(p, historyMagic)
	if !ok {
		return Message{Payload: p}
	}
	cur, rest, ok1 := strings.Cut(rest, "\x00")
	event, payload, ok2 := strings.Cut(rest, "\x00")
	c, err := ParseCursor(cur)
	if !ok1 || !ok2 || err != nil {
		return Message{Payload: p} // not ours after all: verbatim
	}
	return Message{Payload: payload, Cursor: c, Event: event}
}

// encodeMessage is decodeMessage's inverse (the memory broker and tests).
func encodeMessage(m Message) string {
	if m.Cursor.IsZero() {
		return m.Payload
	}
	return historyMagic + m.Cursor.String() + "\x00" + m.Event + "\x00" + m.Payload
}

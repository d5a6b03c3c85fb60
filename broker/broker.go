// Package broker moves messages between applications and nodes: a Broker
// carries published payloads to every node, a StateStore keeps the per-user
// state object sent on connect. Redis and in-memory implementations live side
// by side and behave the same.
package broker

import (
	"context"
	"errors"
	"strings"
)

// Redis names of the external contract (DESIGN.md section 2).
const (
	UserPrefix  = "notify:"
	TopicPrefix = "notify_topic:"
	StateSuffix = ":state"

	// UserPattern and TopicPattern are what every node pattern-subscribes to.
	UserPattern  = UserPrefix + "*"
	TopicPattern = TopicPrefix + "*"

	// ControlChannel carries commands for every node (a Disconnect, say).
	// Every node subscribes to it besides the patterns, which it does not match.
	ControlChannel = "notify_control"
)

// ErrUnavailable is wrapped by errors that mean the backing service cannot be
// reached right now (as opposed to bad input).
var ErrUnavailable = errors.New("broker unavailable")

// Handler receives what the subscription brings. Its methods are called one
// at a time (from the broker's one reader goroutine, or serialised when a
// broker reads several connections, as in SubscribeSharded), each
// connection's messages in the order the broker received them, and must not
// block: a slow handler stalls delivery to every client
// of the node, and Redis closes a subscription whose reader falls too far
// behind (client-output-buffer-limit pubsub), losing what is published until
// the broker has resubscribed.
type Handler interface {
	// Deliver receives a message published on a user's or a topic's
	// channel. t.Name may be empty ("notify:" names nobody): the handler
	// counts and drops it.
	//
	// t.Name and m.Payload may be views of the broker's read buffer (the
	// Redis brokers': no copy per message), valid only until Deliver
	// returns: a handler that keeps either keeps a copy (Target.Clone,
	// Message.Clone). m.Cursor and m.Event are its own.
	Deliver(t Target, m Message)
	// Control receives a node-to-node command published on ControlChannel.
	Control(payload string)
}

// Flusher is implemented by a Handler that holds work back across the
// messages handed to it in a row (the hub holds back its wake-ups of the
// event loops). A broker calls Flush, as it calls the Handler (one call at
// a time), before it waits for more: after a publish it delivered (the
// in-memory broker), before a read of its connection would block (Redis).
type Flusher interface {
	Flush()
}

// flush calls h.Flush when h is a Flusher.
func flush(h Handler) {
	if f, ok := h.(Flusher); ok {
		f.Flush()
	}
}

// Broker carries published messages to every node.
type Broker interface {
	// Run subscribes to UserPattern, TopicPattern and ControlChannel and
	// hands each message to h until ctx ends: a user's or topic's message to
	// h.Deliver, a control message to h.Control. It reconnects and
	// resubscribes on errors, and returns nil when ctx ends.
	Run(ctx context.Context, h Handler) error
	// Publish sends payload on channel to every node.
	Publish(ctx context.Context, channel string, payload []byte) error
	// PublishMany sends payload on every channel, pipelined.
	PublishMany(ctx context.Context, channels []string, payload []byte) error
	// Ready returns nil while messages demonstrably make the round trip
	// (a probe published recently came back), else an error saying why.
	Ready() error
}

// StateStore keeps the state object of each user.
type StateStore interface {
	// GetState returns all fields of the user's state; an empty map (not an
	// error) when the user has none.
	GetState(ctx context.Context, userID string) (map[string]string, error)
	// SetState merges fields into the user's state.
	SetState(ctx context.Context, userID string, fields map[string]string) error
	// DeleteState removes the named fields, or the whole state when none are named.
	DeleteState(ctx context.Context, userID string, fields ...string) error
}

// UserChannel is the channel that reaches every connection of userID.
func UserChannel(userID string) string { return UserPrefix + userID }

// TopicChannel is the channel that reaches every connection joined to topic.
func TopicChannel(topic string) string { return TopicPrefix + topic }

// Channel is the channel that addresses t.
func (t Target) Channel() string {
	if t.Topic {
		return TopicChannel(t.Name)
	}
	return UserChannel(t.Name)
}

// StateKey is the Redis hash holding userID's state.
func StateKey(userID string) string { return UserPrefix + userID + StateSuffix }

// Target is what a channel name addresses.
type Target struct {
	Topic bool   // false: a user id
	Name  string // user id or topic name; empty when the channel names none
}

// Clone returns t with a name of its own (see Handler.Deliver).
func (t Target) Clone() Target {
	t.Name = strings.Clone(t.Name)
	return t
}

// ParseChannel tells which user or topic a channel addresses. ok is false for
// channels outside the contract.
func ParseChannel(channel string) (t Target, ok bool) {
	// The topic prefix is checked first: "notify_topic:" does not start with
	// "notify:", but keeping the order explicit avoids surprises if prefixes change.
	if name, found := strings.CutPrefix(channel, TopicPrefix); found {
		return Target{Topic: true, Name: name}, true
	}
	if name, found := strings.CutPrefix(channel, UserPrefix); found {
		return Target{Name: name}, true
	}
	return Target{}, false
}

package hub

import (
	"strconv"
	"testing"

	"github.com/notify-dev/notify/broker"
)

// BenchmarkDeliverNoLocalRecipient is the common case of a node in a
// cluster: the message is for a user connected elsewhere.
func BenchmarkDeliverNoLocalRecipient(b *testing.B) {
	h := New(nil, nil)
	targets := make([]broker.Target, 1024)
	for i := range targets {
		targets[i] = broker.Target{Name: "user-" + strconv.Itoa(i)}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.Deliver(targets[i&1023], broker.Message{Payload: "payload"})
		i++
	}
}

// BenchmarkDeliverOneConnection: a user with one local connection.
func BenchmarkDeliverOneConnection(b *testing.B) {
	h := New(nil, nil)
	c, _ := newClient("alice")
	c.Sink = discard{}
	h.Add(c)
	h.JoinUser(c)
	t := broker.Target{Name: "alice"}
	b.ReportAllocs()
	for b.Loop() {
		h.Deliver(t, broker.Message{Payload: "payload"})
	}
}

type discard struct{}

func (discard) Deliver(m *Message, _ bool) bool {
	_ = m.Frame(FormatWebSocket, func(m *Message) []byte { return []byte(m.Payload) })
	return true
}
func (discard) Close(int, string) {}
func (discard) Closed() bool      { return false }

// BenchmarkHubAddRemove: a client of a user with no other connection comes
// and goes.
func BenchmarkHubAddRemove(b *testing.B) {
	h := New(nil, nil)
	clients := make([]*Client, 1024)
	for i := range clients {
		clients[i] = &Client{User: "user-" + strconv.Itoa(i), Sink: discard{}}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := clients[i&1023]
		h.Add(c)
		h.Remove(c, 1000, 0)
		i++
	}
}

// BenchmarkHubAddRemoveTopic: the same client, joined to a topic.
func BenchmarkHubAddRemoveTopic(b *testing.B) {
	h := New(nil, nil)
	clients := make([]*Client, 1024)
	for i := range clients {
		clients[i] = &Client{User: "user-" + strconv.Itoa(i%256), Sink: discard{}}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := clients[i&1023]
		h.Add(c)
		h.JoinTopic(c, "news")
		h.Remove(c, 1000, 0)
		i++
	}
}

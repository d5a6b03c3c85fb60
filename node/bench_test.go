package node

import (
	"strconv"
	"testing"
)

// BenchmarkDeliverNoLocalRecipient is the common case of a node in a
// cluster: the message is for a user connected elsewhere.
func BenchmarkDeliverNoLocalRecipient(b *testing.B) {
	n, err := New(benchConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer n.ws.Close()
	channels := make([]string, 1024)
	for i := range channels {
		channels[i] = "notify:user-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n.deliver(channels[i&1023], "payload")
		i++
	}
}

func BenchmarkHubAddRemove(b *testing.B) {
	h := newHub()
	clients := make([]*client, 1024)
	for i := range clients {
		clients[i] = &client{user: "user-" + strconv.Itoa(i%256), topics: []topicRef{{name: "news"}}}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := clients[i&1023]
		h.add(c)
		h.remove(c)
		i++
	}
}

func benchConfig() Config {
	cfg := DefaultConfig()
	cfg.Port = "127.0.0.1:0"
	cfg.PprofPort = "off"
	cfg.GRPCPort = "off"
	cfg.GossipAddr = "127.0.0.1:0"
	cfg.Auth.Secret = "bench"
	return cfg
}

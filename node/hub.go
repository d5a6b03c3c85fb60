package node

import (
	"hash/maphash"
	"sync"

	"github.com/notify-dev/notify/transport"
)

// client is one connected client as the hub knows it.
type client struct {
	conn   *transport.Conn
	user   string
	topics []topicRef
	via    string // the node that relays this client to us, if any
	// Position in the user's set, so leaving is O(1). Guarded by the shard
	// lock of the user.
	userPos int32
}

// topicRef is a joined topic and the client's position in its set (guarded
// by the topic's shard lock).
type topicRef struct {
	name string
	pos  int32
}

// connSet is the local connections of one user or one topic. Maps hold it by
// value: a user with one connection costs the map entry and a one-pointer array.
type connSet struct {
	clients []*client
}

const hubShards = 64 // power of two; enough that registrations rarely contend

// hub finds the local connections of a user or a topic. Users and topics are
// sharded by a hash of their name; delivery takes a shard's read lock only.
type hub struct {
	seed   maphash.Seed
	shards [hubShards]hubShard
}

type hubShard struct {
	mu     sync.RWMutex
	users  map[string]connSet
	topics map[string]connSet
	_      [40]byte // keep neighbouring shard locks off one cache line
}

func newHub() *hub {
	h := &hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].users = make(map[string]connSet)
		h.shards[i].topics = make(map[string]connSet)
	}
	return h
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[maphash.String(h.seed, name)&(hubShards-1)]
}

// add registers c under its user and topics. From then on every message for
// them reaches c (queued while c is held).
func (h *hub) add(c *client) {
	s := h.shard(c.user)
	s.mu.Lock()
	c.userPos = addTo(s.users, c.user, c)
	s.mu.Unlock()
	for i := range c.topics {
		t := &c.topics[i]
		s := h.shard(t.name)
		s.mu.Lock()
		t.pos = addTo(s.topics, t.name, c)
		s.mu.Unlock()
	}
}

func addTo(m map[string]connSet, name string, c *client) int32 {
	set := m[name]
	set.clients = append(set.clients, c)
	m[name] = set
	return int32(len(set.clients) - 1)
}

// remove unregisters c. It must have been added.
func (h *hub) remove(c *client) {
	s := h.shard(c.user)
	s.mu.Lock()
	if moved := removeFrom(s.users, c.user, c.userPos); moved != nil {
		moved.userPos = c.userPos
	}
	s.mu.Unlock()
	for _, t := range c.topics {
		s := h.shard(t.name)
		s.mu.Lock()
		if moved := removeFrom(s.topics, t.name, t.pos); moved != nil {
			for i := range moved.topics {
				if moved.topics[i].name == t.name {
					moved.topics[i].pos = t.pos
				}
			}
		}
		s.mu.Unlock()
	}
}

// removeFrom deletes position pos of the set by moving the last client
// there, and returns the moved client (nil if none moved).
func removeFrom(m map[string]connSet, name string, pos int32) *client {
	set := m[name]
	last := int32(len(set.clients) - 1)
	var moved *client
	if pos != last {
		moved = set.clients[last]
		set.clients[pos] = moved
	}
	set.clients[last] = nil
	set.clients = set.clients[:last]
	switch {
	case last == 0:
		delete(m, name)
		return moved
	case cap(set.clients) > 64 && len(set.clients) < cap(set.clients)/4:
		// A topic that shrank a lot gives its memory back.
		set.clients = append([]*client(nil), set.clients...)
	}
	m[name] = set
	return moved
}

// deliver builds the frame for payload once, only if there is a local
// recipient, and queues the same bytes on each. It returns how many
// connections took it.
func (h *hub) deliver(topic bool, name, payload string) int {
	s := h.shard(name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	set := s.users[name]
	if topic {
		set = s.topics[name]
	}
	if len(set.clients) == 0 {
		return 0
	}
	frame := transport.DataFrame(payload)
	n := 0
	if len(set.clients) <= directFanout {
		// A user's few connections: write at once from here, the cheapest
		// and quickest path.
		for _, c := range set.clients {
			if c.conn.Send(frame) {
				n++
			}
		}
		return n
	}
	// A big fan-out: the event loops write, in parallel, coalescing frames
	// that queue up while they are busy.
	for _, c := range set.clients {
		if c.conn.Enqueue(frame) {
			n++
		}
	}
	return n
}

// directFanout is the largest set written to directly by the broker's
// goroutine; larger ones are handed to the event loops.
const directFanout = 8

// userConns returns the local connections of user.
func (h *hub) userConns(user string) []*client {
	s := h.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*client(nil), s.users[user].clients...)
}

// userCount returns how many local connections user has.
func (h *hub) userCount(user string) int {
	s := h.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.users[user].clients)
}

// all returns every local client.
func (h *hub) all() []*client {
	var out []*client
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, set := range s.users {
			out = append(out, set.clients...)
		}
		s.mu.RUnlock()
	}
	return out
}

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
	topics []string

	// Positions in the hub's sets, so leaving is O(1) even for a topic with
	// many members. Guarded by the shard locks of the respective sets.
	userPos  int
	topicPos []int
}

// connSet is the local connections of one user or one topic.
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
	users  map[string]*connSet
	topics map[string]*connSet
	_      [40]byte // keep neighbouring shard locks off one cache line
}

func newHub() *hub {
	h := &hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].users = make(map[string]*connSet)
		h.shards[i].topics = make(map[string]*connSet)
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
	c.topicPos = make([]int, len(c.topics))
	for i, t := range c.topics {
		s := h.shard(t)
		s.mu.Lock()
		c.topicPos[i] = addTo(s.topics, t, c)
		s.mu.Unlock()
	}
}

func addTo(m map[string]*connSet, name string, c *client) int {
	set := m[name]
	if set == nil {
		set = &connSet{}
		m[name] = set
	}
	set.clients = append(set.clients, c)
	return len(set.clients) - 1
}

// remove unregisters c. It must have been added.
func (h *hub) remove(c *client) {
	s := h.shard(c.user)
	s.mu.Lock()
	if moved := removeFrom(s.users, c.user, c.userPos); moved != nil {
		moved.userPos = c.userPos
	}
	s.mu.Unlock()
	for i, t := range c.topics {
		s := h.shard(t)
		s.mu.Lock()
		if moved := removeFrom(s.topics, t, c.topicPos[i]); moved != nil {
			moved.topicPos[indexOf(moved.topics, t)] = c.topicPos[i]
		}
		s.mu.Unlock()
	}
}

// removeFrom deletes position pos of the set by moving the last client
// there, and returns the moved client (nil if none moved).
func removeFrom(m map[string]*connSet, name string, pos int) *client {
	set := m[name]
	last := len(set.clients) - 1
	var moved *client
	if pos != last {
		moved = set.clients[last]
		set.clients[pos] = moved
	}
	set.clients[last] = nil
	set.clients = set.clients[:last]
	if last == 0 {
		delete(m, name)
	} else if cap(set.clients) > 64 && len(set.clients) < cap(set.clients)/4 {
		// A topic that shrank a lot gives its memory back.
		set.clients = append([]*client(nil), set.clients...)
	}
	return moved
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
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
	if set == nil {
		return 0
	}
	frame := transport.DataFrame(payload)
	n := 0
	for _, c := range set.clients {
		if c.conn.Send(frame) {
			n++
		}
	}
	return n
}

// userConns returns the local connections of user.
func (h *hub) userConns(user string) []*client {
	s := h.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if set := s.users[user]; set != nil {
		return append([]*client(nil), set.clients...)
	}
	return nil
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

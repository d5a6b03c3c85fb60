package node

import (
	"hash/maphash"
	"sync"

	"github.com/notify-dev/notify/transport"
)

// clientKind is the protocol a client speaks.
type clientKind uint8

const (
	kindNotify   clientKind = iota // /notify/ws
	kindSSE                        // /notify/sse
	kindPhoenix                    // /pubsub/websocket
	kindLongPoll                   // /pubsub/longpoll
)

// client is one connected client as the hub knows it.
type client struct {
	conn   *transport.Conn // nil for long-poll
	user   string
	topics []topicRef
	via    string // the node that relays this client to us, if any
	// Position in the user's set, so leaving is O(1). Guarded by the shard
	// lock of the user.
	userPos int32
	inUser  bool // in the user's set: from the start, or once a Phoenix client joined user:<id>
	kind    clientKind
	phx     *phxSocket // Phoenix (WebSocket or long-poll) only
}

// topicRef is a joined topic and the client's position in its set (guarded
// by the topic's shard lock).
type topicRef struct {
	name string
	pos  int32
}

// lockSubs guards the membership fields of a client whose memberships change
// after it connected (Phoenix joins and leaves) against the position updates
// other clients' departures make. Lock order: shard lock, then this.
func (c *client) lockSubs() {
	if c.phx != nil {
		c.phx.mu.Lock()
	}
}

func (c *client) unlockSubs() {
	if c.phx != nil {
		c.phx.mu.Unlock()
	}
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
	h.addUser(c)
	for i := range c.topics {
		t := &c.topics[i]
		s := h.shard(t.name)
		s.mu.Lock()
		t.pos = addTo(s.topics, t.name, c)
		s.mu.Unlock()
	}
}

// addUser puts c in its user's set.
func (h *hub) addUser(c *client) {
	s := h.shard(c.user)
	s.mu.Lock()
	pos := addTo(s.users, c.user, c)
	c.lockSubs()
	c.userPos, c.inUser = pos, true
	c.unlockSubs()
	s.mu.Unlock()
}

// addTopic joins c to a topic after it connected (Phoenix).
func (h *hub) addTopic(c *client, name string) {
	s := h.shard(name)
	s.mu.Lock()
	pos := addTo(s.topics, name, c)
	c.lockSubs()
	c.topics = append(c.topics, topicRef{name: name, pos: pos})
	c.unlockSubs()
	s.mu.Unlock()
}

func addTo(m map[string]connSet, name string, c *client) int32 {
	set := m[name]
	set.clients = append(set.clients, c)
	m[name] = set
	return int32(len(set.clients) - 1)
}

// remove unregisters c from everything it is in.
func (h *hub) remove(c *client) {
	h.removeUser(c)
	c.lockSubs()
	topics := append([]topicRef(nil), c.topics...)
	c.unlockSubs()
	for _, t := range topics {
		h.removeTopic(c, t.name)
	}
}

// removeUser takes c out of its user's set, if it is in it.
func (h *hub) removeUser(c *client) {
	s := h.shard(c.user)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.lockSubs()
	in, pos := c.inUser, c.userPos
	c.inUser = false
	c.unlockSubs()
	if !in {
		return
	}
	if moved := removeFrom(s.users, c.user, pos); moved != nil {
		moved.lockSubs()
		moved.userPos = pos
		moved.unlockSubs()
	}
}

// removeTopic takes c out of a topic's set, if it is in it.
func (h *hub) removeTopic(c *client, name string) {
	s := h.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.lockSubs()
	i := topicIndex(c.topics, name)
	if i < 0 {
		c.unlockSubs()
		return
	}
	pos := c.topics[i].pos
	c.topics = append(c.topics[:i:i], c.topics[i+1:]...)
	c.unlockSubs()
	if moved := removeFrom(s.topics, name, pos); moved != nil {
		moved.lockSubs()
		if j := topicIndex(moved.topics, name); j >= 0 {
			moved.topics[j].pos = pos
		}
		moved.unlockSubs()
	}
}

func topicIndex(ts []topicRef, name string) int {
	for i := range ts {
		if ts[i].name == name {
			return i
		}
	}
	return -1
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

// deliver hands payload to every local client of a user or topic. Each
// protocol's frame is built once, when the first client of that kind comes
// up, and the same bytes go to all of them. event is the Phoenix event name
// ("" means "message"). It returns how many clients took it.
func (h *hub) deliver(topic bool, name, payload, event string) int {
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
	f := frames{payload: payload, event: event, topic: topic, name: name}
	n := 0
	// A user's few connections are written to at once from here, the
	// cheapest and quickest path; a big fan-out goes to the event loops,
	// which write in parallel and coalesce frames that queue up meanwhile.
	direct := len(set.clients) <= directFanout
	for _, c := range set.clients {
		var ok bool
		switch c.kind {
		case kindNotify:
			ok = send(c.conn, f.notify(), direct)
		case kindSSE:
			ok = send(c.conn, f.sse(), direct)
		case kindPhoenix, kindLongPoll:
			ok = c.phx.push(f.phoenixTopic(), f.phoenix(c.phx.vsn1), direct)
		}
		if ok {
			n++
		}
	}
	return n
}

func send(c *transport.Conn, frame []byte, direct bool) bool {
	if direct {
		return c.Send(frame)
	}
	return c.Enqueue(frame)
}

// directFanout is the largest set written to directly by the broker's
// goroutine; larger ones are handed to the event loops.
const directFanout = 8

// userConns returns the local clients in user's set.
func (h *hub) userConns(user string) []*client {
	s := h.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*client(nil), s.users[user].clients...)
}

// userCount returns how many local clients are in user's set.
func (h *hub) userCount(user string) int {
	s := h.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.users[user].clients)
}

// all returns every local client in a user's set.
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

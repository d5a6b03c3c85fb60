// Package hub finds the local clients of a user or a topic and hands each of
// them a published message, encoded once per protocol (Message.Frame). It is
// the broker's handler for deliveries: broker -> Hub.DeliverBatched ->
// Sink.Deliver of each recipient -> its connection's queue, written by its
// event loop once the broker's Flush (Hub.Flush) wakes it.
//
// Locks, in the only order there is: a shard lock (users and topics are
// sharded by a hash of their name), then the membership lock of the
// client's user shard (shard.memberMu, a leaf that guards the clients'
// topic lists), or whatever a Sink takes for its connection, or the
// Interest's own lock (a leaf, taken under a shard lock only). No Sink
// calls back into the hub while it holds its own locks.
package hub

import (
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/transport"
)

const numShards = 64 // power of two; enough that registrations rarely contend

// directFanout is the largest set written to directly on the delivering
// goroutine; larger ones are handed to the event loops.
const directFanout = 8

// Hub is the registry of a node's local clients and their memberships.
type Hub struct {
	seed     maphash.Seed
	shards   [numShards]shard
	open     atomic.Int64
	metrics  *metrics
	log      *slog.Logger
	messages sync.Pool           // *Message, reused across deliveries
	frames   transport.FramePool // of the messages to a user's few connections
	watcher  Watcher             // nil: none
	interest Interest            // nil: none
	// batch holds back the event loops' wake-ups of DeliverBatched until
	// Flush; the broker's reader, which calls both, owns it.
	batch transport.Batch
}

// Watcher is told of every delivery of a user's message with history and
// how many local clients took it (the hand-off of undelivered messages). It
// runs on the broker's reader and must not block; user and m.Payload are
// valid only during the call (broker.Handler).
type Watcher interface {
	Delivered(user string, m broker.Message, took int)
}

// Watch sets the watcher; call it before the first Deliver.
func (h *Hub) Watch(w Watcher) { h.watcher = w }

// Interest is told when the first local client of a user or a topic
// arrives and when the last leaves: a broker that subscribes per channel
// (NOTIFY_SUBSCRIBE_MODE=user) follows it. A user's clients are all those
// registered, joined to the user or not. Its methods are called under a
// shard lock, in order for each name, and must not block.
type Interest interface {
	Want(t broker.Target)
	Unwant(t broker.Target)
}

// Follow sets the interest; call it before the first Add.
func (h *Hub) Follow(i Interest) { h.interest = i }

type shard struct {
	mu sync.RWMutex
	// Every registered client whose user hashes here is in exactly one of
	// users (messages to the user reach it) and lurkers (registered, not in
	// its user's set: a Phoenix socket before it joins user:<id>).
	users   map[string]set
	lurkers map[string]set
	topics  map[string]set
	// memberMu guards Client.topics of the clients whose user hashes here.
	// A leaf: taken under a topic's shard lock, nothing taken under it.
	memberMu sync.Mutex
	_        [32]byte // keep neighbouring shard locks off one cache line
}

// set is the local clients of one user or one topic. Maps hold it by value:
// a user with one connection costs the map entry and a one-pointer array.
type set struct {
	clients []*Client
}

// New returns an empty hub whose metrics are registered on reg.
func New(reg prometheus.Registerer, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Hub{seed: maphash.MakeSeed(), metrics: newMetrics(reg), log: log}
	h.messages.New = func() any { return new(Message) }
	for i := range h.shards {
		h.shards[i].users = make(map[string]set)
		h.shards[i].lurkers = make(map[string]set)
		h.shards[i].topics = make(map[string]set)
	}
	return h
}

func (h *Hub) shard(name string) *shard {
	return &h.shards[maphash.String(h.seed, name)&(numShards-1)]
}

// ---- delivery ----

// Deliver hands a message published to a user or a topic to each of its
// local clients, writing to a few at once on the caller's goroutine.
func (h *Hub) Deliver(t broker.Target, m broker.Message) { h.deliver(t, m, nil) }

// DeliverBatched is Deliver for the broker's reader, which calls it for
// one message after another and Flush before it waits for more: the
// frames are queued for the clients' event loops, which are woken once per
// batch (Flush) and do the writes, on every core. Calls are serialised by
// the broker, with Flush.
func (h *Hub) DeliverBatched(t broker.Target, m broker.Message) { h.deliver(t, m, &h.batch) }

// Flush wakes the event loops for what DeliverBatched queued.
func (h *Hub) Flush() { h.batch.Flush() }

func (h *Hub) deliver(t broker.Target, m broker.Message, b *transport.Batch) {
	h.metrics.received.Inc()
	if t.Name == "" {
		h.metrics.droppedEmpty.Inc()
		return
	}
	n := h.fanOut(t, m, b)
	if n > 0 {
		h.metrics.delivered.Add(float64(n))
	}
	if h.watcher != nil && !t.Topic && !m.Cursor.IsZero() {
		h.watcher.Delivered(t.Name, m, n)
	}
}

// DeliverEvent is Deliver for a message with a Phoenix event name that
// came without history (BroadcastTextMessage while history is off): Phoenix
// clients get it as that event, the others get the message verbatim.
func (h *Hub) DeliverEvent(t broker.Target, message, event string) {
	h.Deliver(t, broker.Message{Payload: message, Event: event})
}

// fanOut gives the message to every client of its target and returns how
// many took it. A user's few connections are copied out and given the
// message without the lock: written to at once from this goroutine, or,
// with a batch, queued for their loops. A large set is handed to the event
// loops under the read lock; they write in parallel and coalesce frames
// that queue up meanwhile.
func (h *Hub) fanOut(t broker.Target, bm broker.Message, b *transport.Batch) int {
	s := h.shard(t.Name)
	s.mu.RLock()
	members := s.users[t.Name].clients
	if t.Topic {
		members = s.topics[t.Name].clients
	}
	if len(members) == 0 {
		s.mu.RUnlock()
		return 0 // the common case in a cluster: the user is connected elsewhere
	}
	m := h.messages.Get().(*Message)
	defer h.release(m)
	m.Topic, m.Name, m.Payload, m.Cursor, m.Event = t.Topic, t.Name, bm.Payload, bm.Cursor, bm.Event
	m.Batch = b
	took := 0
	if len(members) <= directFanout {
		m.pool = &h.frames
		var few [directFanout]*Client
		n := copy(few[:], members)
		s.mu.RUnlock()
		for _, c := range few[:n] {
			if c.Sink.Deliver(m, b == nil) {
				took++
			}
		}
		return took
	}
	defer s.mu.RUnlock()
	for _, c := range members {
		if c.Sink.Deliver(m, false) {
			took++
		}
	}
	return took
}

// release returns a delivered message to the pool, with the hub's
// references to its pooled frames: no Sink keeps the Message itself, only
// the frames it built.
func (h *Hub) release(m *Message) {
	m.reset()
	h.messages.Put(m)
}

// ---- registry and memberships ----

// Add registers c in its user's set: messages to the user reach it from
// now on (queued behind whatever its protocol sends first), it is among
// Clients, and Remove is due.
func (h *Hub) Add(c *Client) { h.AddLimit(c, true, 0) }

// AddUnjoined registers c without joining it to its user: a Phoenix socket,
// whose joins come with phx_join (JoinUser).
func (h *Hub) AddUnjoined(c *Client) { h.AddLimit(c, false, 0) }

// AddLimit registers c (in its user's set, or unjoined) unless its user
// already has max registered clients here (0: no limit); it reports
// whether c is registered. Count and add are one step under the shard's
// lock, so concurrent connects of one user never overshoot.
func (h *Hub) AddLimit(c *Client, inUser bool, max int) bool {
	s := h.shard(c.User)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.listed {
		return true
	}
	n := len(s.users[c.User].clients) + len(s.lurkers[c.User].clients)
	if max > 0 && n >= max {
		return false
	}
	c.listed = true
	s.moveIn(c, inUser)
	if n == 0 && h.interest != nil {
		h.interest.Want(broker.Target{Name: c.User})
	}
	return true
}

// Opened counts c as an open connection (notify_connections and Open),
// before its protocol hands it to an event loop: a client that already has
// its first frames is counted. Accepted follows once it is live.
func (h *Hub) Opened(c *Client) {
	s := h.shard(c.User)
	s.mu.Lock()
	opened := c.listed && !c.opened
	c.opened = c.opened || opened
	s.mu.Unlock()
	if opened {
		h.open.Add(1)
		h.metrics.transports[c.Transport].connections.Inc()
	}
}

// Accepted counts c as accepted (notify_connections_accepted_total): it is
// attached to an event loop, or its long-poll session was handed out.
func (h *Hub) Accepted(c *Client) { h.metrics.transports[c.Transport].accepted.Inc() }

// Remove takes c out of everything. For an open client it counts the close
// code (0: it never went live, nothing to count), and dropped messages of a
// slow consumer. Calling it again does nothing.
func (h *Hub) Remove(c *Client, code, dropped int) {
	for h.leaveSomeTopic(c) {
	}
	s := h.shard(c.User)
	s.mu.Lock()
	listed, opened := c.listed, c.opened
	if listed {
		s.moveOut(c)
		c.listed, c.opened = false, false
		if h.interest != nil && len(s.users[c.User].clients)+len(s.lurkers[c.User].clients) == 0 {
			h.interest.Unwant(broker.Target{Name: c.User})
		}
	}
	s.mu.Unlock()
	if !listed {
		return
	}
	if opened {
		h.open.Add(-1)
		h.metrics.transports[c.Transport].connections.Dec()
		if code != 0 {
			h.metrics.disconnect(code)
		}
	}
	if dropped > 0 {
		h.metrics.droppedSlow.Add(float64(dropped))
		h.log.Info("slow consumer cut", "user", c.User, "transport", c.Transport.String(), "dropped", dropped)
	}
}

// leaveSomeTopic takes c out of one of its topics; false when it is in none.
func (h *Hub) leaveSomeTopic(c *Client) bool {
	us := h.shard(c.User)
	us.memberMu.Lock()
	if len(c.topics) == 0 {
		us.memberMu.Unlock()
		return false
	}
	name := c.topics[len(c.topics)-1].name
	us.memberMu.Unlock()
	h.LeaveTopic(c, name) // takes the topic's shard lock, then memberMu
	return true
}

// moveOut takes c out of the set it is in (its user's, or the lurkers);
// the shard's lock is held.
func (s *shard) moveOut(c *Client) {
	from := s.lurkers
	if c.inUser {
		from = s.users
	}
	if moved := removeFrom(from, c.User, c.userPos); moved != nil {
		moved.userPos = c.userPos // same user, same shard: under this lock
	}
}

// JoinUser puts c, registered, in its user's set, if it is not in it.
func (h *Hub) JoinUser(c *Client) { h.setInUser(c, true) }

// LeaveUser takes c out of its user's set, if it is in it; it stays
// registered.
func (h *Hub) LeaveUser(c *Client) { h.setInUser(c, false) }

func (h *Hub) setInUser(c *Client, in bool) {
	s := h.shard(c.User)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.listed && c.inUser != in {
		s.moveOut(c)
		s.moveIn(c, in)
	}
}

// moveIn puts c in its user's set (in) or among the lurkers; the shard's
// lock is held.
func (s *shard) moveIn(c *Client, in bool) {
	to := s.lurkers
	if in {
		to = s.users
	}
	c.userPos, c.inUser = addTo(to, c.User, c), in
}

// JoinTopic adds c to a topic's set, if it is not in it. name must not be
// part of a larger string that should not stay alive with the client.
func (h *Hub) JoinTopic(c *Client, name string) {
	s := h.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	us := h.shard(c.User)
	us.memberMu.Lock()
	if topicIndex(c.topics, name) >= 0 {
		us.memberMu.Unlock()
		return
	}
	pos := addTo(s.topics, name, c)
	c.topics = append(c.topics, topicRef{name: name, pos: pos})
	us.memberMu.Unlock()
	if pos == 0 && h.interest != nil {
		h.interest.Want(broker.Target{Topic: true, Name: name})
	}
}

// LeaveTopic takes c out of a topic's set, if it is in it.
func (h *Hub) LeaveTopic(c *Client, name string) {
	s := h.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	us := h.shard(c.User)
	us.memberMu.Lock()
	i := topicIndex(c.topics, name)
	if i < 0 {
		us.memberMu.Unlock()
		return
	}
	pos := c.topics[i].pos
	c.topics = append(c.topics[:i:i], c.topics[i+1:]...)
	us.memberMu.Unlock()
	if moved := removeFrom(s.topics, name, pos); moved != nil {
		ms := h.shard(moved.User)
		ms.memberMu.Lock()
		if j := topicIndex(moved.topics, name); j >= 0 {
			moved.topics[j].pos = pos
		}
		ms.memberMu.Unlock()
	}
	if h.interest != nil && len(s.topics[name].clients) == 0 {
		h.interest.Unwant(broker.Target{Topic: true, Name: name})
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

func addTo(m map[string]set, name string, c *Client) int32 {
	s := m[name]
	s.clients = append(s.clients, c)
	m[name] = s
	return int32(len(s.clients) - 1)
}

// removeFrom deletes position pos of a set by moving the last client there,
// and returns the moved client (nil if none moved).
func removeFrom(m map[string]set, name string, pos int32) *Client {
	s := m[name]
	last := int32(len(s.clients) - 1)
	var moved *Client
	if pos != last {
		moved = s.clients[last]
		s.clients[pos] = moved
	}
	s.clients[last] = nil
	s.clients = s.clients[:last]
	switch {
	case last == 0:
		delete(m, name)
		return moved
	case cap(s.clients) > 64 && len(s.clients) < cap(s.clients)/4:
		// A topic that shrank a lot gives its memory back.
		s.clients = append([]*Client(nil), s.clients...)
	}
	m[name] = s
	return moved
}

// ---- lookups ----

// Clients returns every registered client, joined to anything or not.
func (h *Hub) Clients() []*Client {
	var out []*Client
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, m := range []map[string]set{s.users, s.lurkers} {
			for _, set := range m {
				out = append(out, set.clients...)
			}
		}
		s.mu.RUnlock()
	}
	return out
}

// UserClients returns the clients in user's set.
func (h *Hub) UserClients(user string) []*Client {
	s := h.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*Client(nil), s.users[user].clients...)
}

// UserCount returns how many clients are in user's set.
func (h *Hub) UserCount(user string) int {
	s := h.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.users[user].clients)
}

// Open returns how many clients are open (Opened and not yet Removed): the
// sum of notify_connections over its transports.
func (h *Hub) Open() int64 { return h.open.Load() }

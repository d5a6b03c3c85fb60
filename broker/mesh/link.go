package mesh

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// link is this node's one connection to a peer and everything that waits
// for it: the messages not acked yet and the state calls not answered yet.
// One goroutine (run) dials, writes and redials for the link's whole life;
// each connection adds a reader of the peer's acks and replies.
//
// Order: messages get consecutive sequence numbers as they are queued and
// are written in that order on one connection at a time; the peer delivers
// them in that order and skips what it already has, so a reconnection
// resends what was not acked without duplicates.
type link struct {
	m     *Mesh
	peer  string
	epoch string // random per link: the peer tells a new link from a reconnection

	wake chan struct{} // size 1: something to write, or the link closed

	mu        sync.Mutex
	addr      string
	q         queue            // not acked yet: [0, sent) written on the current connection
	sent      int              // entries of q written on the current connection
	seq       uint64           // of the last message queued
	written   uint64           // highest seq ever written (each message counts once as sent)
	calls     []*call          // not written yet
	pending   map[uint64]*call // written on the current connection, awaiting their replies
	nextID    uint64
	up        bool
	downSince time.Time
	lastErr   error // why the last connection or dial failed; nil while up
	closed    bool  // the peer left: run ends
}

// call is a state operation waiting for the peer's reply.
type call struct {
	id     uint64
	op     byte
	user   string
	fields map[string]string
	done   chan callResult // size 1
}

type callResult struct {
	fields map[string]string
	err    error
}

var (
	errLinkClosed   = errors.New("link closed")
	errQueueFull    = errors.New("queue full")
	errTooManyCalls = errors.New("too many state calls in flight")
	errConnLost     = errors.New("connection lost before the reply")
)

func newLink(m *Mesh, peer, addr string) *link {
	return &link{
		m: m, peer: peer, epoch: randomEpoch(), addr: addr,
		wake:      make(chan struct{}, 1),
		pending:   make(map[uint64]*call),
		downSince: time.Now(),
	}
}

func randomEpoch() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (l *link) setAddr(addr string) {
	l.mu.Lock()
	l.addr = addr
	l.mu.Unlock()
}

func (l *link) address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// enqueue queues a message for the peer. A full queue refuses it (the
// caller counts the drop).
func (l *link) enqueue(channel, payload string) error {
	e := entry{channel: channel, payload: payload, at: time.Now()}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return errLinkClosed
	case l.q.bytes+e.size() > l.m.cfg.QueueBytes:
		l.mu.Unlock()
		return errQueueFull
	}
	l.seq++
	e.seq = l.seq
	l.q.push(e)
	l.mu.Unlock()
	signal(l.wake)
	return nil
}

// do sends a state call and waits for its reply or the end of ctx. Once
// the link has been down for failFastAfter (a dial or connection failed
// and none succeeded since) it fails at once rather than hold the caller;
// a call made during a quick reconnection waits for it.
func (l *link) do(ctx context.Context, op byte, user string, fields map[string]string) (map[string]string, error) {
	c := &call{op: op, user: user, fields: fields, done: make(chan callResult, 1)}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return nil, errLinkClosed
	case !l.up && l.lastErr != nil && time.Since(l.downSince) >= failFastAfter:
		err := l.lastErr
		l.mu.Unlock()
		return nil, fmt.Errorf("link down: %w", err)
	case len(l.calls)+len(l.pending) >= maxCalls:
		l.mu.Unlock()
		return nil, errTooManyCalls
	}
	l.nextID++
	c.id = l.nextID
	l.calls = append(l.calls, c)
	l.mu.Unlock()
	signal(l.wake)
	select {
	case r := <-c.done:
		return r.fields, r.err
	case <-ctx.Done():
		l.forget(c)
		return nil, ctx.Err()
	}
}

// forget drops a call whose caller gave up.
func (l *link) forget(c *call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, c.id)
	for i, w := range l.calls {
		if w == c {
			l.calls = append(l.calls[:i], l.calls[i+1:]...)
			break
		}
	}
}

// take returns what the current connection has not written yet, at most
// maxBatch messages, and moves the calls among it to pending.
func (l *link) take(batch []entry, calls []*call) ([]entry, []*call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	end := min(l.q.len(), l.sent+maxBatch)
	fresh := 0
	for i := l.sent; i < end; i++ {
		e := l.q.at(i)
		batch = append(batch, *e)
		if e.seq > l.written {
			l.written = e.seq
			fresh++
		}
	}
	l.sent = end
	l.m.metrics.sent.Add(float64(fresh))
	for _, c := range l.calls {
		l.pending[c.id] = c
		calls = append(calls, c)
	}
	clear(l.calls)
	l.calls = l.calls[:0]
	return batch, calls
}

// acked drops the messages the peer has delivered.
func (l *link) acked(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.q.len() > 0 && l.q.at(0).seq <= seq {
		l.q.pop()
		if l.sent > 0 {
			l.sent--
		}
	}
}

// replied hands a reply to its call.
func (l *link) replied(r replyFrame) {
	l.mu.Lock()
	c := l.pending[r.id]
	delete(l.pending, r.id)
	l.mu.Unlock()
	if c == nil {
		return // its caller gave up
	}
	res := callResult{fields: r.fields}
	if r.err != "" {
		res.err = fmt.Errorf("%s: %s", l.peer, r.err)
	}
	c.done <- res
}

// connected: a new connection is up, and the peer has delivered every
// message up to acked; the rest is written again from the start.
func (l *link) connected(acked uint64) {
	l.acked(acked)
	l.mu.Lock()
	wasDown := l.lastErr != nil
	l.up, l.lastErr, l.sent = true, nil, 0
	l.mu.Unlock()
	l.m.metrics.linksUp.Inc()
	l.m.metrics.connects.Inc()
	if wasDown {
		l.m.log.Info("mesh link up again", "peer", l.peer)
	}
}

// disconnected: the connection ended with err; calls written on it will
// get no reply.
func (l *link) disconnected(err error) {
	l.mu.Lock()
	l.up, l.sent, l.downSince, l.lastErr = false, 0, time.Now(), err
	lost := l.pending
	l.pending = make(map[uint64]*call)
	queued := l.q.len()
	closed := l.closed
	l.mu.Unlock()
	l.m.metrics.linksUp.Dec()
	for _, c := range lost {
		c.done <- callResult{err: errConnLost}
	}
	if !closed {
		l.m.log.Warn("mesh link down; reconnecting", "peer", l.peer, "queued", queued, "err", err)
	}
}

// dialFailed records why no connection could be made.
func (l *link) dialFailed(err error) {
	l.mu.Lock()
	first := l.lastErr == nil
	l.lastErr = err
	l.mu.Unlock()
	if first {
		l.m.log.Warn("mesh link: cannot connect; retrying", "peer", l.peer, "err", err)
	}
}

// expire drops, while the link is down, the messages queued longer than
// the retry period ago: the peer is unreachable, and a message that late
// would arrive out of its time.
func (l *link) expire(now time.Time) {
	l.mu.Lock()
	n := 0
	for !l.up && l.q.len() > 0 && now.Sub(l.q.at(0).at) >= l.m.cfg.RetryFor {
		l.q.pop()
		n++
	}
	l.mu.Unlock()
	if n > 0 {
		l.m.metrics.drop(reasonUnreachable, n)
		l.m.log.Warn("mesh: messages dropped, peer unreachable for the retry period", "peer", l.peer, "messages", n,
			"retry", l.m.cfg.RetryFor.String())
	}
}

// downFor says how long the link has been down (0 while up) and why.
func (l *link) downFor(now time.Time) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.up {
		return 0, nil
	}
	err := l.lastErr
	if err == nil {
		err = errors.New("connecting")
	}
	return now.Sub(l.downSince), err
}

// close ends the link (the peer left the membership): run drops what is
// still queued.
func (l *link) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	signal(l.wake)
}

func (l *link) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// abandon ends the link's life: what is queued is dropped (counted under
// reason), every call waiting fails.
func (l *link) abandon(reason string) {
	l.mu.Lock()
	l.closed = true
	n := l.q.len()
	l.q = queue{}
	waiting := append(l.calls, mapValues(l.pending)...)
	l.calls, l.pending = nil, map[uint64]*call{}
	l.mu.Unlock()
	for _, c := range waiting {
		c.done <- callResult{err: errLinkClosed}
	}
	if n > 0 {
		l.m.metrics.drop(reason, n)
		l.m.log.Warn("mesh: messages dropped with their link", "peer", l.peer, "messages", n, "reason", reason)
	}
}

func mapValues(m map[uint64]*call) []*call {
	out := make([]*call, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	return out
}

// newReader is the buffered reader of a link connection.
func newReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, readBuffer) }

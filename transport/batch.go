package transport

// Batch holds back the wake-ups of the event loops for the frames queued
// through it (Conn.PushBatch) until Flush. A goroutine that queues many
// frames in a row, as the broker's reader does one message after another,
// then wakes each loop once for all of them and makes no system call per
// frame: the loops write, in parallel, each connection's frames coalesced.
//
// A Batch belongs to one goroutine at a time, which must Flush it before
// it waits for anything: until then the frames stay queued. Its zero value
// is ready to use.
type Batch struct {
	loops []loopConns // one per loop that has connections to wake
}

type loopConns struct {
	l     *loop
	conns []*Conn
}

// batchWakeAt is how many connections a loop is given at most before it is
// woken without waiting for Flush: a message to a big topic (thousands of
// connections) has the loops writing while the rest is still being queued,
// at one wake-up per this many connections.
const batchWakeAt = 256

// add records that c's loop must be woken for c.
func (b *Batch) add(c *Conn) {
	i := 0
	for i < len(b.loops) && b.loops[i].l != c.drv {
		i++
	}
	if i == len(b.loops) {
		b.loops = append(b.loops, loopConns{l: c.drv})
	}
	lc := &b.loops[i]
	lc.conns = append(lc.conns, c)
	if len(lc.conns) >= batchWakeAt {
		lc.wake(true)
	}
}

// wake hands the connections to their loop, with one wake-up. early: more
// of the same message is still to be queued.
func (lc *loopConns) wake(early bool) {
	lc.l.wakeAll(lc.conns, early)
	lc.reset()
}

// reset empties lc once its loop has the connections.
func (lc *loopConns) reset() {
	clear(lc.conns) // the slice is kept; the connections are not
	lc.conns = lc.conns[:0]
}

// chainMax is how many connections a Flush hands over at most as a chain
// (see Flush): about half a millisecond of flushes on one thread.
const chainMax = 64

// Flush wakes each loop with connections queued through b since the last
// Flush, once.
//
// A small batch goes to its loops as a chain, on the thread that runs the
// caller: the first loop is nudged, and each loop nudges the next once it
// has taken its work, so the loops run one after another where the caller
// parks. Readying the loops at once (signal) has an idle P's thread woken
// for them, and the threads' hand-offs cost more than the flushes of a few
// dozen connections: at 20,000 per-user messages/s (about 20 a Flush, one
// per connection) the node delivered 106,000 messages per CPU-second with
// both loops readied, 126,000 as a chain, 143,000 with one P (go run
// ./test/bench -peruser-only). The head is a parked loop: a busy one would
// hold the others back until its pass ends. A batch of more than chainMax
// connections, or one whose loops are all busy, readies every loop at
// once: the loops write on every core.
func (b *Batch) Flush() {
	head := -1
	if n := b.pending(); n == 0 {
		return
	} else if n <= chainMax {
		for i := range b.loops {
			if len(b.loops[i].conns) > 0 && b.loops[i].l.chainable() {
				head = i
				break
			}
		}
	}
	if head < 0 {
		for i := range b.loops {
			if len(b.loops[i].conns) > 0 {
				b.loops[i].wake(false)
			}
		}
		return
	}
	// Queued from the last loop of the chain to the head, whose nudge comes
	// last: each loop's work is queued before the loop before it can take
	// its own and nudge it.
	var next *loop
	for i := len(b.loops) - 1; i >= 0; i-- {
		if lc := &b.loops[i]; i != head && len(lc.conns) > 0 {
			lc.l.wakeChained(lc.conns, next, false)
			next = lc.l
			lc.reset()
		}
	}
	lc := &b.loops[head]
	lc.l.wakeChained(lc.conns, next, true)
	lc.reset()
}

// pending counts the connections waiting for Flush.
func (b *Batch) pending() int {
	n := 0
	for _, lc := range b.loops {
		n += len(lc.conns)
	}
	return n
}

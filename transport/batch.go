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
	clear(lc.conns) // the slice is kept; the connections are not
	lc.conns = lc.conns[:0]
}

// Flush wakes each loop with connections queued through b since the last
// Flush, once.
func (b *Batch) Flush() {
	for i := range b.loops {
		if len(b.loops[i].conns) > 0 {
			b.loops[i].wake(false)
		}
	}
}

// pending counts the connections waiting for Flush.
func (b *Batch) pending() int {
	n := 0
	for _, lc := range b.loops {
		n += len(lc.conns)
	}
	return n
}

//go:build linux && !notify_noepoll

package transport

// wheel is a hashed timing wheel: one per event loop, holding every
// connection's next deadline (ping, idle timeout, token expiry, close
// timeout). A connection has at most one entry, linked through its own
// fields, so scheduling allocates nothing and costs O(1).
type wheel struct {
	tick  int64 // nanoseconds per slot
	cur   int64 // last tick processed
	slots []*Conn
}

const wheelSlots = 512 // power of two

func newWheel(tick, now int64) wheel {
	return wheel{tick: tick, cur: now / tick, slots: make([]*Conn, wheelSlots)}
}

// schedule (re)places c to fire at time t (nanoseconds on the loop clock).
func (w *wheel) schedule(c *Conn, t int64) {
	w.remove(c)
	due := (t + w.tick - 1) / w.tick
	if due <= w.cur {
		due = w.cur + 1
	}
	e := &c.io
	e.tdue = due
	e.tprev = nil
	e.tnext = w.slots[due&(wheelSlots-1)]
	if e.tnext != nil {
		e.tnext.io.tprev = c
	}
	w.slots[due&(wheelSlots-1)] = c
}

func (w *wheel) remove(c *Conn) {
	e := &c.io
	if e.tdue == 0 {
		return
	}
	if e.tprev != nil {
		e.tprev.io.tnext = e.tnext
	} else {
		w.slots[e.tdue&(wheelSlots-1)] = e.tnext
	}
	if e.tnext != nil {
		e.tnext.io.tprev = e.tprev
	}
	e.tnext, e.tprev, e.tdue = nil, nil, 0
}

// advance fires, in tick order, every entry due up to time now. fire may
// reschedule or remove the connection it is given, but no other.
func (w *wheel) advance(now int64, fire func(*Conn)) {
	for target := now / w.tick; w.cur < target; {
		w.cur++
		for c := w.slots[w.cur&(wheelSlots-1)]; c != nil; {
			next := c.io.tnext
			if c.io.tdue <= w.cur {
				w.remove(c)
				fire(c)
			}
			c = next
		}
	}
}

// untilNext is the time from now to the next tick, in nanoseconds.
func (w *wheel) untilNext(now int64) int64 {
	return max((w.cur+1)*w.tick-now, 0)
}

package transport

// wheel is a hashed timing wheel: one per event loop, holding every
// connection's next deadline (ping, idle timeout, token expiry, close
// timeout). A connection has at most one entry, linked through its own fields,
// so scheduling allocates nothing and costs O(1).
type wheel struct {
	tick  int64 // nanoseconds per slot
	cur   int64 // last tick processed
	slots []*timerEntry
}

// timerEntry is embedded in whatever the wheel schedules.
type timerEntry struct {
	next, prev *timerEntry
	due        int64 // tick number; 0 = not scheduled
	slot       int32
	owner      *Conn
}

const wheelSlots = 512 // power of two

func newWheel(tick, now int64) wheel {
	return wheel{tick: tick, cur: now / tick, slots: make([]*timerEntry, wheelSlots)}
}

// schedule (re)places e to fire at time t (nanoseconds on the loop clock).
func (w *wheel) schedule(e *timerEntry, t int64) {
	w.remove(e)
	due := (t + w.tick - 1) / w.tick
	if due <= w.cur {
		due = w.cur + 1
	}
	e.due = due
	e.slot = int32(due & (wheelSlots - 1))
	e.prev = nil
	e.next = w.slots[e.slot]
	if e.next != nil {
		e.next.prev = e
	}
	w.slots[e.slot] = e
}

func (w *wheel) remove(e *timerEntry) {
	if e.due == 0 {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		w.slots[e.slot] = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.next, e.prev, e.due = nil, nil, 0
}

// advance fires, in tick order, every entry due up to time now. fire may
// reschedule or remove the entry it is given, but no other.
func (w *wheel) advance(now int64, fire func(*timerEntry)) {
	for target := now / w.tick; w.cur < target; {
		w.cur++
		for e := w.slots[w.cur&(wheelSlots-1)]; e != nil; {
			next := e.next
			if e.due <= w.cur {
				w.remove(e)
				fire(e)
			}
			e = next
		}
	}
}

// untilNext is the time from now to the next tick, in nanoseconds.
func (w *wheel) untilNext(now int64) int64 {
	d := (w.cur+1)*w.tick - now
	if d < 0 {
		return 0
	}
	return d
}

package mesh

import "time"

// entry is one message on a link: queued, or written and not acked yet.
type entry struct {
	seq     uint64
	channel string
	payload string // shared by every link a topic's message goes to
	at      time.Time
}

// entryOverhead is what an entry costs besides its strings (the struct and
// the frame header), so that a flood of empty messages is bounded too.
const entryOverhead = 64

func (e *entry) size() int { return len(e.channel) + len(e.payload) + entryOverhead }

// queue is a FIFO of entries in a slice: pushes at the end, pops at the
// front, the slice compacted as the front advances. Not safe for
// concurrent use (the link's mutex guards it).
type queue struct {
	items []entry
	head  int
	bytes int // of the entries held, by size()
}

func (q *queue) len() int { return len(q.items) - q.head }

func (q *queue) push(e entry) {
	q.items = append(q.items, e)
	q.bytes += e.size()
}

// at returns the i-th entry from the front.
func (q *queue) at(i int) *entry { return &q.items[q.head+i] }

// pop removes the front entry (the queue must not be empty).
func (q *queue) pop() entry {
	e := q.items[q.head]
	q.items[q.head] = entry{} // the strings are released
	q.head++
	q.bytes -= e.size()
	switch n := q.len(); {
	case n == 0:
		q.items, q.head = q.items[:0], 0
	case q.head >= 1024 && q.head >= n:
		// Move the rest down once the dead front outweighs it: O(1)
		// amortised per pop, and the slice never holds more than twice
		// what is live.
		copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return e
}

package transport

import (
	"sync"
	"time"
)

// connState is where a connection is in its life. It only moves forward.
type connState uint8

const (
	stateHeld    connState = iota // created, not attached: frames queue up, nothing is written
	stateOpen                     // attached to a driver, frames flow
	stateClosing                  // a close frame is queued: no more data frames
	stateClosed                   // the socket is closed
)

// CloseInfo tells the Handler how a connection ended.
type CloseInfo struct {
	// Code is the close code the server sent, or the peer's code when the
	// peer closed first, or CloseAbnormal when the socket ended without a
	// close frame.
	Code int
	// Dropped counts queued frames discarded when the connection was cut as a
	// slow consumer.
	Dropped int
}

// Handler receives the events of the connections created with it
// (ConnOptions.Handler), so each protocol owns its own connections' events.
// Methods run on the goroutine driving the connection (an event loop on
// Linux) and must not block.
type Handler interface {
	// OnMessage receives a complete data message of a connection created with
	// ConnOptions.Messages. payload is only valid during the call.
	OnMessage(c *Conn, text bool, payload []byte)
	// OnClose is called once, after the socket is closed.
	OnClose(c *Conn, info CloseInfo)
}

// ExpiryNotifier is implemented by a Handler that wants to know,
// Config.ExpiryNotice ahead, that its connection's expiry is near (so it can
// ask the client to refresh its token). The notice is the server's, not the
// connection's: all share one value, which keeps it out of Conn.
type ExpiryNotifier interface {
	// OnExpiring is called once per expiry value, when the connection is
	// open and its expiry is at most Config.ExpiryNotice away (at once,
	// within a tick of the timers, when it already was at Attach or
	// SetExpiry), but not once the expiry has passed: the connection is
	// closing then. Like OnMessage it runs on the goroutine that reads the
	// connection (its event loop on Linux), so never at the same time as
	// OnMessage, and must not block; it typically Sends a frame. expiry is
	// the value given to ConnOptions.Expiry or SetExpiry.
	OnExpiring(c *Conn, expiry time.Time)
}

// ConnOptions describe one connection.
type ConnOptions struct {
	// Expiry closes the connection with CloseTokenExpired when it passes; zero
	// means never. Conn.SetExpiry moves it.
	Expiry time.Time
	// Messages makes the connection collect client data messages and hand them
	// to Handler.OnMessage; otherwise they are validated and discarded.
	Messages bool
	// Handler receives this connection's events; required.
	Handler Handler
	// Raw makes a connection that does not speak WebSocket (Server-Sent
	// Events): frames are written as they are, input is read and discarded,
	// the peer's EOF ends it, and it has no idle timeout (such clients never
	// write).
	Raw *RawOptions
}

// RawOptions describe a raw connection.
type RawOptions struct {
	// Ping is written every ping interval, to keep intermediaries from
	// timing the connection out.
	Ping []byte
	// Close returns the last bytes written before the server closes the
	// connection (nil for none); the socket closes once they are out.
	Close func(code int, reason string) []byte
}

// Conn is one server-side WebSocket connection. Send, Enqueue, Close and
// SetExpiry may be called from any goroutine; everything else belongs to the
// driver. The layout is kept small: an idle connection is this struct and
// nothing else (TestConnSize).
type Conn struct {
	srv     *Server
	drv     *loop
	handler Handler     // read-only after creation
	raw     *RawOptions // nil: WebSocket; read-only after creation

	mu         sync.Mutex
	expiry     int64      // unix ns, 0 = never; set by NewConn and SetExpiry
	queue      []outFrame // frames not yet fully written; queue[0].b[head:] goes first
	head       int32
	queued     int32 // bytes in queue not yet written
	dropped    int32
	closeCode  int16 // code of the close frame queued or received
	state      connState
	scheduled  bool // the driver has been asked to flush
	blocked    bool // the socket is full: the driver flushes when it drains
	cutPending bool // cut as a slow consumer: the driver drops the queue on its next flush
	messages   bool // read-only after creation
	notices    bool // the handler is an ExpiryNotifier and the server gives notice; read-only after creation
	retime     bool // SetExpiry moved expiry: the driver has yet to take the new value
	busy       bool // data frames were queued since the last ping: the emptied queue array is kept
	pinned     bool // queue[0] is Attach's response, not yet fully written: a cut keeps it

	// Owned by the driver.
	io ioState
	rd readState
}

// outFrame is one frame in a connection's queue. shared, when not nil, is
// the pooled buffer b lies in: the queue holds a reference to it until b is
// written or dropped (release).
type outFrame struct {
	b      []byte
	shared *SharedFrame
}

// release gives up the queue's reference to f's buffer, if pooled.
func (f outFrame) release() {
	if f.shared != nil {
		f.shared.Release()
	}
}

// releaseAll releases every frame of q and clears it.
func releaseAll(q []outFrame) {
	for _, f := range q {
		f.release()
	}
	clear(q)
}

// keptQueue is the largest queue array a connection keeps once its queue
// is empty, while data frames come (busy): a user's connection that gets
// a message at a time then queues without allocating. An idle connection
// (nothing but pings since the last ping) keeps none.
const keptQueue = 2

// Send queues a complete frame (from DataFrame or TextFrame) for the client,
// writing it at once when nothing is queued ahead of it: one system call on
// the caller's goroutine, no hand-off to the event loop. frame must not be
// modified afterwards; the same slice may go to many connections. It never
// blocks: when the queue would exceed the configured limit the connection is
// cut with CloseSlowConsumer. It reports whether the frame was taken.
func (c *Conn) Send(frame []byte) bool { return c.send(outFrame{b: frame}, true, nil) }

// Enqueue is Send without the immediate write: the event loop writes the
// frame, coalescing it with others queued meanwhile. A caller fanning one
// message out to many connections uses it to spread the writes over the
// loops instead of making them all itself.
func (c *Conn) Enqueue(frame []byte) bool { return c.send(outFrame{b: frame}, false, nil) }

// Push is Send when direct (the caller writes a few connections itself),
// else Enqueue (it fans out to many and leaves the writes to the loops).
func (c *Conn) Push(frame []byte, direct bool) bool { return c.send(outFrame{b: frame}, direct, nil) }

// PushBatch is Enqueue with the event loop's wake-up held back in b until
// b.Flush, when b is not nil; else Push(frame, direct).
func (c *Conn) PushBatch(frame []byte, direct bool, b *Batch) bool {
	return c.send(outFrame{b: frame}, direct && b == nil, b)
}

// PushShared is PushBatch of a pooled frame: the connection takes a
// reference to f while it holds the frame (none when it is written at once
// or refused); the caller keeps its own and releases it when it is done.
func (c *Conn) PushShared(f *SharedFrame, direct bool, b *Batch) bool {
	return c.send(outFrame{b: f.b, shared: f}, direct && b == nil, b)
}

func (c *Conn) send(f outFrame, direct bool, b *Batch) bool {
	frame := f.b
	c.mu.Lock()
	if c.state >= stateClosing {
		c.mu.Unlock()
		return false
	}
	if int(c.queued)+len(frame) > c.srv.cfg.SendQueueBytes {
		// The queue itself is rearranged by the driver only (it may be writing
		// from it right now); here we mark the cut and ask for a flush.
		c.state = stateClosing
		c.cutPending = true
		c.closeCode = CloseSlowConsumer
		c.dropped++
		wake := c.wakeLocked()
		c.mu.Unlock()
		if wake {
			c.drv.wake(c)
		}
		return false
	}
	if direct && c.state == stateOpen && len(c.queue) == 0 && !c.blocked {
		if n, tried := c.writeNowLocked(frame); tried {
			if n < len(frame) {
				// The socket took part or nothing: the rest waits for the
				// loop, which resumes on EPOLLOUT.
				c.queueLocked(f)
				c.head = int32(n)
				c.queued = int32(len(frame) - n)
				c.blocked = true
			}
			c.mu.Unlock()
			return true
		}
	}
	c.queueLocked(f)
	c.queued += int32(len(frame))
	c.busy = true
	wake := c.wakeLocked()
	c.mu.Unlock()
	switch {
	case !wake:
	case b != nil:
		b.add(c) // scheduled: later frames wait for the same wake-up
	default:
		c.drv.wake(c)
	}
	return true
}

// Close starts the closing handshake with code and reason after the frames
// already queued. The socket is closed when the client answers, or after the
// server's close timeout. Calling Close on a closing connection does nothing.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	if c.state >= stateClosing {
		c.mu.Unlock()
		return
	}
	c.closeLocked(code, reason)
	wake := c.wakeLocked()
	c.mu.Unlock()
	if wake {
		c.drv.wake(c)
	}
}

// SetExpiry moves the connection's expiry to t (zero: never), as when its
// client refreshed its token in-band: the connection now closes with
// CloseTokenExpired when t passes, whether t is earlier or later than
// before, and the expiry notice (ExpiryNotifier) is given again for t.
//
// It may be called from any goroutine, the Handler's own methods included:
// the value is recorded under the connection's lock and the driver, which
// alone owns the timers, takes it up on its own goroutine (woken for it like
// for a Send), so it takes effect within a tick of the timers. On a held
// connection it applies from Attach. A closing or closed connection ignores
// it, as it does setting the expiry it already has.
func (c *Conn) SetExpiry(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.mu.Lock()
	if c.state >= stateClosing || ns == c.expiry {
		c.mu.Unlock()
		return
	}
	c.expiry = ns
	c.retime = true
	wake := c.state == stateOpen && c.drv.expiryMovedLocked(c)
	c.mu.Unlock()
	if wake {
		c.drv.wake(c)
	}
}

// Closed reports whether the connection is closing or closed.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state >= stateClosing
}

func (c *Conn) getCloseCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.closeCode)
}

// goneCode is the code reported when the peer's socket ends: that of our
// closing handshake if one was under way, else CloseAbnormal.
func (c *Conn) goneCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosing {
		return int(c.closeCode)
	}
	return CloseAbnormal
}

func (c *Conn) closeLocked(code int, reason string) {
	var f []byte
	if c.raw == nil {
		f = closeFrame(code, reason)
	} else if c.raw.Close != nil {
		f = c.raw.Close(code, reason)
	}
	if len(f) > 0 {
		c.queue = append(c.queue, outFrame{b: f})
		c.queued += int32(len(f))
	}
	c.state = stateClosing
	c.closeCode = int16(code)
}

// pingFrame is what the connection gets every ping interval.
func (c *Conn) pingFrame() []byte {
	if c.raw != nil {
		return c.raw.Ping
	}
	return pingFrame
}

// wakeLocked marks the connection scheduled and reports whether the driver
// must be woken. Connections not attached yet (held, or closed or cut while
// held) are flushed when attached.
func (c *Conn) wakeLocked() bool {
	if c.drv == nil || c.scheduled || c.blocked {
		return false
	}
	c.scheduled = true
	return true
}

// sendControlLocked queues a frame generated by the server itself (pong, ping,
// close echo); unlike Send it is allowed while closing and is not limited.
func (c *Conn) sendControlLocked(f []byte) {
	c.queue = append(c.queue, outFrame{b: f})
	c.queued += int32(len(f))
}

// queueLocked appends f to the queue, with a reference to its buffer.
func (c *Conn) queueLocked(f outFrame) {
	if f.shared != nil {
		f.shared.retain()
	}
	c.queue = append(c.queue, f)
}

// dropQueueLocked releases and forgets the whole queue (the connection is
// closed).
func (c *Conn) dropQueueLocked() {
	releaseAll(c.queue)
	c.queue = nil
	c.queued = 0
}

// applyCutLocked drops every queued frame except one already partly written
// (cutting it would corrupt the stream) and queues the slow-consumer close.
func (c *Conn) applyCutLocked() {
	keep := 0
	if c.head > 0 || c.pinned {
		keep = 1
	}
	c.dropped += int32(len(c.queue) - keep)
	releaseAll(c.queue[keep:])
	c.queue = c.queue[:keep]
	c.queued = 0
	if keep == 1 {
		c.queued = int32(len(c.queue[0].b)) - c.head
	}
	c.cutPending = false
	c.closeLocked(CloseSlowConsumer, "slow consumer")
}

// consumeLocked removes n written bytes from the front of the queue.
func (c *Conn) consumeLocked(n int) {
	c.queued -= int32(n)
	i := 0
	for n > 0 {
		rest := len(c.queue[i].b) - int(c.head)
		if n < rest {
			c.head += int32(n)
			break
		}
		n -= rest
		c.queue[i].release()
		c.queue[i] = outFrame{}
		c.head = 0
		c.pinned = false
		i++
	}
	switch {
	case i < len(c.queue):
		c.queue = c.queue[i:]
	case c.busy && cap(c.queue) <= keptQueue:
		c.queue = c.queue[:0] // the next message queues in it
	default:
		// An idle connection keeps no queue array.
		c.queue = nil
	}
}

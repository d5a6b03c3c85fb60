//go:build !linux || notify_noepoll

package transport

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The fallback driver for systems without epoll: a reader and a writer
// goroutine per connection, behind the same Conn and Server API. The
// build tag notify_noepoll selects it on Linux too, so its tests run here.

type ioState struct {
	nc       net.Conn
	wakeCh   chan struct{} // size 1: a pending flush request
	done     chan struct{} // closed when the socket is closed
	lastRecv atomic.Int64  // unix ns
	peerDone atomic.Bool   // the peer's close frame came in
	failed   atomic.Bool   // input was invalid: close once our close frame is out
	once     sync.Once
	// writing: the writer is writing from the queue, unlocked (under the
	// Conn's mu): finish leaves the queue's buffers for it to release.
	writing bool
}

type loop struct {
	srv     *Server
	mu      sync.Mutex
	conns   map[*Conn]struct{}
	relays  map[*relayPair]struct{}
	relayWG sync.WaitGroup // a relay's goroutines, until its onClose has run
	stopd   bool
}

// chainable is false: there is no loop to chain, Batch.Flush wakes each
// writer.
func (l *loop) chainable() bool { return false }

func newLoop(s *Server) (*loop, error) {
	return &loop{srv: s, conns: make(map[*Conn]struct{}), relays: make(map[*relayPair]struct{})}, nil
}

func (l *loop) attach(c *Conn, nc net.Conn, buffered, response []byte, first [][]byte) error {
	c.io.nc = nc
	c.io.wakeCh = make(chan struct{}, 1)
	c.io.done = make(chan struct{})
	c.io.lastRecv.Store(time.Now().UnixNano())
	l.mu.Lock()
	if l.stopd {
		l.mu.Unlock()
		nc.Close()
		return ErrServerClosed
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	c.mu.Lock()
	c.drv = l
	c.prependLocked(response, first)
	if c.state == stateHeld {
		c.state = stateOpen
	}
	c.mu.Unlock()
	if len(buffered) > 0 {
		c.feed(append([]byte(nil), buffered...))
		l.afterFeed(c)
	}
	go l.reader(c)
	go l.writer(c)
	l.wake(c)
	return nil
}

// wakeAll wakes the writer of each of cs (Batch).
func (l *loop) wakeAll(cs []*Conn, _ bool) {
	for _, c := range cs {
		l.wake(c)
	}
}

// wakeChained is wakeAll: Batch.Flush chains no writers here.
func (l *loop) wakeChained(cs []*Conn, _ *loop, _ bool) { l.wakeAll(cs, false) }

func (l *loop) wake(c *Conn) {
	select {
	case c.io.wakeCh <- struct{}{}:
	default:
	}
}

func (l *loop) stop() {
	l.mu.Lock()
	l.stopd = true
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	relays := make([]*relayPair, 0, len(l.relays))
	for p := range l.relays {
		relays = append(relays, p)
	}
	l.mu.Unlock()
	for _, c := range conns {
		l.finish(c, CloseGoingAway)
	}
	// Closing both sockets ends the copies; the relay's onClose runs before
	// stop returns, as on the event loop.
	for _, p := range relays {
		p.a.Close()
		p.b.Close()
	}
	l.relayWG.Wait()
}

func (l *loop) afterFeed(c *Conn) {
	if c.rd.peerClosed {
		c.io.peerDone.Store(true)
	} else if c.rd.done {
		c.io.failed.Store(true)
	}
	c.mu.Lock()
	c.scheduled = false
	c.mu.Unlock()
	l.wake(c)
}

func (l *loop) reader(c *Conn) {
	buf := make([]byte, 4096)
	var notice readerNotice
	for {
		l.expiryNotice(c, &notice)
		// An incomplete header or control frame from the last read goes in
		// front of the new bytes.
		off := copy(buf, c.rd.pend)
		n, err := c.io.nc.Read(buf[off:])
		if n > 0 {
			c.io.lastRecv.Store(time.Now().UnixNano())
			c.feed(buf[:off+n])
			l.afterFeed(c)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			notice.armed = -1 // the notice's deadline, or SetExpiry's wake-up
			continue
		}
		if err != nil {
			l.finish(c, c.goneCode())
			return
		}
	}
}

// readerNotice is the reader's part of the expiry notice. The reader gives
// it, so that OnExpiring, like OnMessage, runs on the reader (the event loop
// serializes them too); a read deadline at the notice's time interrupts
// Read for it.
type readerNotice struct {
	noticed bool  // given for the current expiry
	armed   int64 // read deadline set (unix ns); 0 = none, -1 = not known
}

// aLongTimeAgo, as a read deadline, makes a waiting Read return at once.
var aLongTimeAgo = time.Unix(1, 0)

// expiryMovedLocked runs in SetExpiry. The writer reads c.expiry on each
// tick, but the reader may wait in Read for a deadline from the old value:
// it is woken to arm the new one. This runs under c.mu, as the reader's
// arming does, so an old deadline cannot overwrite the wake-up.
func (l *loop) expiryMovedLocked(c *Conn) (wake bool) {
	if c.notices {
		_ = c.io.nc.SetReadDeadline(aLongTimeAgo)
	}
	return false
}

// expiryNotice gives the expiry notice if it is due, else sets the read
// deadline to when it will be (none when no notice is to come).
func (l *loop) expiryNotice(c *Conn, n *readerNotice) {
	for c.notices {
		c.mu.Lock()
		if c.retime {
			c.retime = false
			n.noticed = false
			n.armed = -1 // SetExpiry set a deadline to wake us
		}
		// Once the expiry has passed there is no notice: the writer closes
		// the connection on its next tick, as the event loop would at once.
		var at int64
		now := time.Now().UnixNano()
		if !n.noticed && c.expiry != 0 && now < c.expiry && c.state == stateOpen {
			at = c.expiry - int64(l.srv.cfg.ExpiryNotice)
		}
		if at != 0 && now >= at {
			n.noticed = true
			expiry := c.expiry
			c.mu.Unlock()
			// Unlocked: the handler typically Sends. It may SetExpiry
			// too, so look again.
			c.handler.(ExpiryNotifier).OnExpiring(c, time.Unix(0, expiry))
			continue
		}
		if at != n.armed {
			var deadline time.Time
			if at != 0 {
				deadline = time.Unix(0, at)
			}
			_ = c.io.nc.SetReadDeadline(deadline)
			n.armed = at
		}
		c.mu.Unlock()
		return
	}
}

// writer flushes the queue and runs the connection's timers.
func (l *loop) writer(c *Conn) {
	ping := l.srv.cfg.PingInterval
	tick := time.NewTicker(min(max(ping/8, time.Millisecond), time.Second))
	defer tick.Stop()
	t := writerTimers{nextPing: time.Now().Add(time.Duration(firstPing(int64(ping))))}
	for {
		select {
		case <-c.io.done:
			return
		case <-c.io.wakeCh:
		case now := <-tick.C:
			if !l.onTick(c, now, &t) {
				return
			}
		}
		if !l.flushAndClose(c, &t) {
			return
		}
	}
}

// writerTimers are the deadlines the writer keeps for its connection.
type writerTimers struct {
	nextPing time.Time
	closeAt  time.Time // zero until the connection is closing
}

// onTick runs the connection's timers: the closing handshake's deadline,
// or token expiry, the idle timeout and the ping. It reports false when the
// connection is finished.
func (l *loop) onTick(c *Conn, now time.Time, t *writerTimers) bool {
	if !t.closeAt.IsZero() {
		if now.After(t.closeAt) {
			l.finish(c, c.getCloseCode())
			return false
		}
		return true
	}
	ping := l.srv.cfg.PingInterval
	c.mu.Lock()
	switch {
	case c.state != stateOpen:
	case c.expiry != 0 && now.UnixNano() >= c.expiry:
		c.closeLocked(CloseTokenExpired, "token expired")
	case c.raw == nil && now.UnixNano()-c.io.lastRecv.Load() >= 2*int64(ping):
		c.closeLocked(CloseNormal, "idle timeout")
	case now.After(t.nextPing):
		if p := c.pingFrame(); len(p) > 0 {
			c.sendControlLocked(p)
		}
		t.nextPing = now.Add(ping)
		c.busy = false // until the next data frame: see keptQueue
	}
	c.mu.Unlock()
	return true
}

// flushAndClose writes the queue and advances a closing connection: arm
// the deadline, half-close once the close frame is out, finish when the
// peer's close came or no handshake is expected. It reports false when the
// connection is finished.
func (l *loop) flushAndClose(c *Conn, t *writerTimers) bool {
	flushed, closing, err := l.flush(c)
	if err != nil {
		code := CloseAbnormal
		if closing {
			code = c.getCloseCode()
		}
		l.finish(c, code)
		return false
	}
	if closing && t.closeAt.IsZero() {
		t.closeAt = time.Now().Add(l.srv.cfg.CloseTimeout)
	}
	if closing && flushed {
		if tc, ok := c.io.nc.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		if c.io.peerDone.Load() || c.raw != nil {
			l.finish(c, c.getCloseCode())
			return false
		}
	}
	return true
}

// flush writes the whole queue (blocking, bounded by the close timeout).
func (l *loop) flush(c *Conn) (flushed, closing bool, err error) {
	for {
		c.mu.Lock()
		c.scheduled = false
		if c.cutPending {
			c.applyCutLocked()
		}
		closing = c.state == stateClosing
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return true, closing, nil
		}
		bufs := make(net.Buffers, len(c.queue))
		for i, f := range c.queue {
			bufs[i] = f.b
		}
		bufs[0] = bufs[0][c.head:]
		c.io.writing = true
		c.mu.Unlock()

		_ = c.io.nc.SetWriteDeadline(time.Now().Add(l.srv.cfg.CloseTimeout))
		n, werr := bufs.WriteTo(c.io.nc)
		c.mu.Lock()
		c.io.writing = false
		if c.state == stateClosed {
			// finish ran meanwhile (the reader saw the peer go, or the
			// server closed) and left the queue to us: nothing to consume.
			c.dropQueueLocked()
			c.mu.Unlock()
			return false, closing, net.ErrClosed
		}
		if n > 0 {
			c.consumeLocked(int(n))
		}
		c.mu.Unlock()
		if werr != nil {
			// A client that reads nothing for a whole close timeout is as
			// good as gone.
			return false, closing, werr
		}
	}
}

func (l *loop) finish(c *Conn, code int) {
	c.io.once.Do(func() {
		c.io.nc.Close()
		close(c.io.done)
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		c.mu.Lock()
		c.state = stateClosed
		if !c.io.writing { // else the writer releases them when its write returns
			c.dropQueueLocked()
		}
		dropped := c.dropped
		c.mu.Unlock()
		c.handler.OnClose(c, CloseInfo{Code: code, Dropped: int(dropped)})
	})
}

// writeNowLocked: the fallback has no non-blocking socket to try; Send
// queues for the writer goroutine.
func (c *Conn) writeNowLocked([]byte) (int, bool) { return 0, false }

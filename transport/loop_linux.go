//go:build linux && !notify_noepoll

package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	readBufferSize = 64 << 10
	maxIOV         = 1024 // IOV_MAX on Linux
	maxReadsPerRun = 16   // then the connection yields to the others
	maxEvents      = 512
)

// ioState is the part of a connection its loop owns. fd is also read under
// Conn.mu by a sender writing directly, so the loop changes it under Conn.mu.
type ioState struct {
	tnext, tprev *Conn // timing wheel links
	tdue         int64 // wheel tick; 0 = not scheduled
	lastRecv     int64 // loop clock, ns
	nextPing     int64
	expiry       int64 // loop clock; 0 = none
	closeAt      int64 // deadline of the closing handshake; 0 until closing starts
	fd           int32
	shutWR       bool // our close frame is written and FIN sent
	again        bool // on the loop's list of connections with unread input
	noticed      bool // the expiry notice for this expiry was given
}

// loop is one epoll event loop. Its goroutine owns every ioState and readState
// of its connections; other goroutines reach it through attach and wake.
type loop struct {
	srv     *Server
	epfd    int
	poll    *os.File           // epfd in Go's poller: the loop waits there, as a goroutine, not a thread in epoll_wait
	rawEp   syscall.RawConn    // poll's
	efd     int                // eventfd in epfd, for nudges; shutdown closes it under mu, which nudges hold
	parked  atomic.Bool        // the loop is waiting in Go's poller (or about to): see Batch.Flush
	waitFn  func(uintptr) bool // tryWait, bound once: a method value made per wait would allocate
	waiting waitState
	base    time.Time
	now     int64
	buf     []byte
	iov     []unix.Iovec
	conns   []*Conn // by fd
	wheel   wheel
	again   []*Conn
	ping    int64

	relays     []*relayEnd // by fd
	relayAgain []*relayEnd

	mu        sync.Mutex
	pending   []*Conn // to flush
	adds      []*Conn // to register
	relayAdds []*relayPair
	yield     bool    // pending came from a batch still being queued (wakeAll)
	then      []*loop // to nudge once the pending work is taken (wakeChained)
	signaled  bool
	nudged    bool // signaled by a nudge (or by the loop before in a chain), not by signal
	stopping  bool
	done      chan struct{}
}

func newLoop(s *Server) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	// Edge-triggered: every write to the eventfd is a new event, read or not.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(efd)}
	if err := epollAdd(epfd, efd, &ev); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl add eventfd: %w", err)
	}
	poll, rawEp, err := pollable(epfd)
	if err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, err
	}
	l := &loop{
		srv:   s,
		epfd:  epfd,
		efd:   efd,
		poll:  poll,
		rawEp: rawEp,
		base:  time.Now(),
		buf:   make([]byte, readBufferSize),
		iov:   make([]unix.Iovec, 0, maxIOV),
		ping:  int64(s.cfg.PingInterval),
		done:  make(chan struct{}),
	}
	l.waitFn = l.tryWait
	// A tick fine enough for the ping interval, coarse enough to cost nothing
	// on an idle node (ten passes a second). The pings due in one tick go out
	// in one pass, their pongs read together, while deliveries wait: at a
	// tenth of a second, 25,000 connections pinged every 25 s are 100 a pass,
	// where a second's tick made them 1,000: the per-user p99 at 20,000
	// deliveries/s next to 15,000 idle connections was 4.7-7.2 ms with the
	// second, 1.9-2.3 ms with the tenth (make bench).
	tick := min(max(s.cfg.PingInterval/8, time.Millisecond), 100*time.Millisecond)
	l.wheel = newWheel(int64(tick), 0)
	go l.run()
	return l, nil
}

func (l *loop) clock() int64 { return int64(time.Since(l.base)) }

// attach runs on the caller's goroutine: it takes the socket out of Go's
// poller and queues the connection for registration.
func (l *loop) attach(c *Conn, nc net.Conn, buffered, response []byte, first [][]byte) error {
	fd, err := detach(nc)
	if err != nil {
		return err
	}
	c.io.fd = int32(fd)
	if len(buffered) > 0 {
		c.rd.pend = append([]byte(nil), buffered...)
	}
	c.mu.Lock()
	c.drv = l
	c.prependLocked(response, first)
	if c.state == stateHeld {
		c.state = stateOpen
	}
	// The registration flushes; until then Send need not wake the loop.
	c.scheduled = true
	c.mu.Unlock()

	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		unix.Close(fd)
		return ErrServerClosed
	}
	l.adds = append(l.adds, c)
	l.unlockAndSignal()
	return nil
}

// detach moves the socket of nc to a descriptor of our own, non-blocking and
// unknown to Go's poller, and closes nc. File()/Fd() are not used: they switch
// the shared socket to blocking mode.
func detach(nc net.Conn) (int, error) {
	defer nc.Close()
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("detach %T: not a socket", nc)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("detach: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(s uintptr) { fd, derr = dupNonblock(s) }); err != nil {
		return -1, fmt.Errorf("detach: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("detach: dup: %w", derr)
	}
	// TCP keepalive and TCP_NODELAY, set by Go when it accepted the
	// connection, are options of the socket, which the duplicate shares: no
	// need to set them again (TestDetachedSocketKeepsOptions checks).
	return fd, nil
}

// chainable reports whether the loop is parked in Go's poller (or about
// to be): a Batch.Flush may make it the head of a chain.
func (l *loop) chainable() bool { return l.parked.Load() }

// unlockAndSignal releases l.mu, taken to queue work for the loop, and
// wakes the loop unless a wake-up is already on its way: many producers
// between two loop passes cost one wake-up.
func (l *loop) unlockAndSignal() {
	// A nudged loop may wait for the producer to park: signal it anyway.
	signal := !l.signaled || l.nudged
	l.signaled, l.nudged = true, false
	l.mu.Unlock()
	if signal {
		l.signal()
	}
}

// wake queues c for a flush on the loop. Called by Send, Close and
// SetExpiry.
func (l *loop) wake(c *Conn) {
	l.mu.Lock()
	l.pending = append(l.pending, c)
	l.unlockAndSignal()
}

// wakeAll queues cs for a flush on the loop with one wake-up (Batch).
// early: the producer is still queuing (its batch reached batchWakeAt
// connections of this loop before its Flush; see runBatch).
func (l *loop) wakeAll(cs []*Conn, early bool) {
	l.mu.Lock()
	l.pending = append(l.pending, cs...)
	l.yield = l.yield || early
	l.unlockAndSignal()
}

// wakeChained queues cs for a flush on the loop, as wakeAll does, with a
// wake-up of another kind (see Batch.Flush): the head of a chain is nudged,
// the other loops of the chain are nudged by the loop before them once it
// has taken its own work. then, if not nil, is the loop after this one.
//
// A head nudged before and not woken since is signaled instead: its
// producer has not parked in between (the broker's reader found more to
// read at once), so no thread has polled for the nudge, and none might
// until sysmon's next poll (up to 10 ms).
func (l *loop) wakeChained(cs []*Conn, then *loop, head bool) {
	l.mu.Lock()
	l.pending = append(l.pending, cs...)
	if then != nil {
		l.then = append(l.then, then)
	}
	switch {
	case !l.signaled:
		l.signaled, l.nudged = true, true
		if head {
			l.nudgeLocked()
		}
		l.mu.Unlock()
	case head && l.nudged:
		l.unlockAndSignal()
	default:
		l.mu.Unlock()
	}
}

// nudge wakes the loop through its eventfd: see nudgeLocked.
func (l *loop) nudge() {
	l.mu.Lock()
	l.nudgeLocked()
	l.mu.Unlock()
}

// nudgeLocked makes the loop's epoll descriptor readable: the loop is
// woken by whichever thread polls the network next, normally the one
// running the caller, once the caller parks. signal instead readies the
// loop at once, which starts another thread for it when a P is idle: a
// hand-off between threads that costs more than the flushes of a small
// batch (at 20,000 per-user messages/s, a sixth of the node's CPU). Under
// l.mu: shutdown closes the eventfd, whose number must not be written
// after that.
func (l *loop) nudgeLocked() {
	if l.efd < 0 {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := rawWrite(l.efd, one[:]); err != nil && err != unix.EAGAIN {
		l.srv.log.Error("eventfd write failed", "err", err)
	}
}

// aLongTimeAgo is a read deadline that has passed: set on the parked
// loop's epoll descriptor, it wakes the loop (a runtime call, no system
// call).
var aLongTimeAgo = time.Unix(1, 0)

// signal wakes the loop from wait. The caller set l.signaled first, under
// l.mu, which wait checks before it parks: a loop not parked yet does not
// park, one parked wakes.
func (l *loop) signal() { _ = l.poll.SetReadDeadline(aLongTimeAgo) }

func (l *loop) stop() {
	l.mu.Lock()
	l.stopping = true
	l.signaled = true
	l.mu.Unlock()
	l.signal()
	<-l.done
}

// batch is the work other goroutines queued for the loop, taken in one go.
// The loop swaps its own emptied slices in, so taking work allocates nothing.
type batch struct {
	adds      []*Conn
	pending   []*Conn
	relayAdds []*relayPair
	then      []*loop // see wakeChained
	yield     bool    // see runBatch
}

func (l *loop) run() {
	defer close(l.done)
	events := make([]unix.EpollEvent, maxEvents)
	var b batch
	for {
		n, err := l.wait(events, l.waitTimeout())
		l.parked.Store(false)
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.srv.log.Error("epoll_wait failed; event loop stops", "err", err)
			l.shutdown()
			return
		}
		l.now = l.clock()
		for i := 0; i < n; i++ {
			l.event(&events[i])
		}
		if stopping := l.takeWork(&b); stopping {
			l.abandon(&b)
			l.shutdown()
			return
		}
		l.runBatch(&b)
		l.readAgain()
		l.wheel.advance(l.now, l.fire)
	}
}

// pollable puts the epoll descriptor epfd in Go's own poller (an epoll
// descriptor is readable while it has events ready): the loop then waits
// for its events as a parked goroutine, woken by the runtime's netpoller,
// instead of as a thread blocked in epoll_wait, which the scheduler must
// hand the loop's P away from and back to on every wake-up (and which
// grows the node's threads).
func pollable(epfd int) (*os.File, syscall.RawConn, error) {
	if err := unix.SetNonblock(epfd, true); err != nil {
		return nil, nil, fmt.Errorf("epoll: set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	return f, raw, nil
}

// wait fills events with what is ready: at once when something is (or
// when timeoutMs is 0, or work is queued: signaled), else once the epoll
// descriptor becomes readable in Go's poller, signal wakes the loop, or
// timeoutMs passes (-1: no limit).
func (l *loop) wait(events []unix.EpollEvent, timeoutMs int) (int, error) {
	if timeoutMs == 0 {
		n, err := epollPoll(l.epfd, events)
		return max(n, 0), err
	}
	var deadline time.Time
	if timeoutMs > 0 {
		deadline = time.Now().Add(time.Duration(timeoutMs) * time.Millisecond)
	}
	// A signal after this finds the deadline set; one before it set
	// signaled, which the check below sees.
	if err := l.poll.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("epoll: deadline: %w", err)
	}
	l.waiting = waitState{events: events}
	rerr := l.rawEp.Read(l.waitFn)
	n, err := l.waiting.n, l.waiting.err
	l.waiting = waitState{}
	switch {
	case errors.Is(rerr, os.ErrDeadlineExceeded):
		return 0, nil
	case rerr != nil:
		return 0, rerr
	}
	return max(n, 0), err
}

// waitState is what tryWait, the poller's callback in wait, works on: in
// the loop, so that a wait allocates nothing.
type waitState struct {
	events []unix.EpollEvent
	n      int
	err    error
}

// tryWait takes the ready events without waiting, and tells the poller
// whether wait is done: events came, epoll_wait failed, or work is queued.
func (l *loop) tryWait(uintptr) bool {
	w := &l.waiting
	w.n, w.err = epollPoll(l.epfd, w.events)
	if w.n != 0 || (w.err != nil && !errors.Is(w.err, unix.EINTR)) {
		return true
	}
	l.mu.Lock()
	queued := l.signaled
	l.mu.Unlock()
	if !queued {
		l.parked.Store(true)
	}
	return queued
}

// waitTimeout is epoll_wait's timeout in milliseconds: none while input is
// left unread, else until the wheel's next tick.
func (l *loop) waitTimeout() int {
	if len(l.again) > 0 || len(l.relayAgain) > 0 {
		return 0
	}
	return int((l.wheel.untilNext(l.clock()) + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}

// event dispatches one epoll event: a relay end or a
// connection.
func (l *loop) event(ev *unix.EpollEvent) {
	fd := int(ev.Fd)
	switch {
	case fd == l.efd:
		// A nudge: the work is in the queues take reads. Reading the count
		// keeps it from ever reaching its limit.
		var count [8]byte
		_, _ = rawRead(fd, count[:])
	case fd < len(l.relays) && l.relays[fd] != nil:
		l.relayEvent(l.relays[fd], ev.Events)
	case fd < len(l.conns) && l.conns[fd] != nil:
		l.connEvent(l.conns[fd], ev.Events)
	}
}

func (l *loop) connEvent(c *Conn, events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.read(c, events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0)
	}
	if events&unix.EPOLLOUT != 0 && c.io.fd >= 0 {
		c.mu.Lock()
		c.blocked = false
		c.mu.Unlock()
		l.flush(c)
	}
}

// take moves the queued work into b, giving the queues b's emptied slices,
// and reports whether the loop is stopping.
func (l *loop) take(b *batch) (stopping bool) {
	l.mu.Lock()
	b.adds, l.adds = l.adds, b.adds[:0]
	b.pending, l.pending = l.pending, b.pending[:0]
	b.relayAdds, l.relayAdds = l.relayAdds, b.relayAdds[:0]
	b.then, l.then = l.then, b.then[:0]
	b.yield, l.yield = l.yield, false
	l.signaled, l.nudged = false, false
	stopping = l.stopping
	l.mu.Unlock()
	return stopping
}

// takeWork takes the queued work into b and nudges the loops chained
// after this one (wakeChained), whose work is queued already: they run
// once this loop parks, on the thread that runs it, or at once on an idle
// one. It reports whether the loop is stopping (the chain is nudged all
// the same).
func (l *loop) takeWork(b *batch) (stopping bool) {
	stopping = l.take(b)
	for i, t := range b.then {
		t.nudge()
		b.then[i] = nil
	}
	return stopping
}

// yieldEvery is how many connections a loop flushes before it lets other
// goroutines run: see runBatch.
const yieldEvery = 256

// runBatch registers new connections and relays and flushes the connections
// that asked for it. Entries are cleared so the slices, reused, keep nothing
// alive.
//
// When the batch holds part of a message still being queued (a big
// topic's: Batch wakes the loops every batchWakeAt connections), the loop
// yields every yieldEvery flushes (runtime.Gosched). Loops that never wait
// leave the broker's reader, which makes their work, only a share of the
// cores: the reader falls behind, each connection's flush finds one frame,
// each frame costs a writev, and the loops are busier still. With 2 cores
// and 10,000 connections that state held, 0.33-0.53 M deliveries per
// CPU-second with half of them late past the bench's second; yielding lets
// the reader keep up, so the frames of a connection waiting for its turn
// meet in one writev: 1.12 M, none lost (make bench, issue 13). Other
// batches do not yield: a yield can cost the loop a time slice of another
// goroutine; yielding in every batch took make fault's slow-readers p99
// to 2.2-2.5x of its control (bound 2x; 1.7-1.9x without the yields).
func (l *loop) runBatch(b *batch) {
	for i, c := range b.adds {
		l.register(c)
		b.adds[i] = nil
	}
	for i, c := range b.pending {
		l.flush(c)
		b.pending[i] = nil
		if b.yield && i%yieldEvery == yieldEvery-1 {
			runtime.Gosched()
		}
	}
	for i, p := range b.relayAdds {
		l.registerRelay(p)
		b.relayAdds[i] = nil
	}
}

// abandon ends what was queued when the loop stopped: connections and relays
// never registered are closed (flushes do not matter any more).
func (l *loop) abandon(b *batch) {
	for _, p := range b.relayAdds {
		l.closeRelay(p)
	}
	for _, c := range b.adds {
		unix.Close(int(c.io.fd))
		c.io.fd = -1
		c.markClosed()
		c.handler.OnClose(c, CloseInfo{Code: CloseGoingAway})
	}
}

// readAgain reads on the sockets that had more input than their share of
// the last turn. Entries added meanwhile wait for the next turn.
func (l *loop) readAgain() {
	if len(l.relayAgain) > 0 {
		again := l.relayAgain
		l.relayAgain = nil
		for _, e := range again {
			e.again = false
			l.relayRead(e)
		}
	}
	if len(l.again) > 0 {
		again := l.again
		l.again = nil
		for _, c := range again {
			c.io.again = false
			if c.io.fd >= 0 {
				l.read(c, true)
			}
		}
	}
}

// shutdown closes every socket of the loop and the loop's own descriptors.
func (l *loop) shutdown() {
	for _, c := range l.conns {
		if c != nil {
			l.closeFD(c, CloseGoingAway)
		}
	}
	for _, e := range l.relays {
		if e != nil {
			l.closeRelay(e.pair)
		}
	}
	l.mu.Lock()
	rawClose(l.efd)
	l.efd = -1
	l.mu.Unlock()
	_ = l.poll.Close() // closes epfd
}

func (l *loop) register(c *Conn) {
	fd := int(c.io.fd)
	l.conns = fit(l.conns, fd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := epollAdd(l.epfd, fd, &ev); err != nil {
		l.srv.log.Error("epoll_ctl add failed", "err", err)
		l.conns[fd] = c
		l.closeFD(c, CloseAbnormal)
		return
	}
	l.conns[fd] = c
	c.io.lastRecv = l.now
	c.io.nextPing = l.now + firstPing(l.ping)
	c.mu.Lock()
	l.loadExpiryLocked(c)
	c.mu.Unlock()
	l.schedule(c)
	if len(c.rd.pend) > 0 {
		b := c.rd.pend
		c.rd.pend = nil
		c.feed(b)
	}
	l.flush(c)
}

// fit grows a table indexed by descriptor so that it holds fd.
func fit[T any](table []*T, fd int) []*T {
	if fd < len(table) {
		return table
	}
	grown := make([]*T, max(fd+1, 2*len(table), 1024))
	copy(grown, table)
	return grown
}

// expiryMovedLocked runs in SetExpiry: the new expiry is taken up by the
// flush it asks for (even of a blocked connection: flush returns at once).
func (l *loop) expiryMovedLocked(c *Conn) (wake bool) {
	if c.scheduled {
		return false
	}
	c.scheduled = true
	return true
}

// loadExpiryLocked moves c.expiry, set on other goroutines, onto the loop
// clock, and arms the notice for it. The caller reschedules.
func (l *loop) loadExpiryLocked(c *Conn) {
	c.retime = false
	c.io.noticed = false
	c.io.expiry = 0
	if c.expiry != 0 {
		// Both clocks read at once (l.now is from the start of this turn):
		// the loop's deadline is then never before the expiry.
		now := time.Now()
		c.io.expiry = max(int64(now.Sub(l.base))+(c.expiry-now.UnixNano()), 1)
	}
}

// schedule sets the connection's timer to its next ping, idle, notice or
// expiry deadline.
func (l *loop) schedule(c *Conn) {
	next := c.io.nextPing
	if c.raw == nil {
		next = min(next, c.io.lastRecv+2*l.ping)
	}
	if c.io.expiry != 0 {
		next = min(next, c.io.expiry)
		if c.notices && !c.io.noticed {
			next = min(next, c.io.expiry-int64(l.srv.cfg.ExpiryNotice))
		}
	}
	l.wheel.schedule(c, next)
}

func (l *loop) fire(c *Conn) {
	if c.io.fd < 0 {
		return
	}
	now := l.now
	if c.io.closeAt != 0 {
		if now >= c.io.closeAt {
			l.closeFD(c, c.getCloseCode())
		} else {
			l.wheel.schedule(c, c.io.closeAt)
		}
		return
	}
	c.mu.Lock()
	if c.retime {
		// A SetExpiry whose wake-up is still queued: the new value counts.
		l.loadExpiryLocked(c)
	}
	l.timersLocked(c, now)
	notice := l.noticeLocked(c, now)
	c.mu.Unlock()
	if notice != 0 {
		// Unlocked: the handler typically Sends.
		c.handler.(ExpiryNotifier).OnExpiring(c, time.Unix(0, notice))
	}
	l.flush(c)
	if c.io.fd >= 0 && c.io.closeAt == 0 {
		l.schedule(c)
	}
}

// timersLocked closes an open connection whose token expired or that went
// idle, or pings it when its ping is due.
func (l *loop) timersLocked(c *Conn, now int64) {
	switch {
	case c.state != stateOpen:
		// Closing, deadline not armed yet: the flush after this arms it.
	case c.io.expiry != 0 && now >= c.io.expiry:
		c.closeLocked(CloseTokenExpired, "token expired")
	case c.raw == nil && now-c.io.lastRecv >= 2*l.ping:
		c.closeLocked(CloseNormal, "idle timeout")
	case now >= c.io.nextPing:
		if p := c.pingFrame(); len(p) > 0 {
			c.sendControlLocked(p)
		}
		c.io.nextPing = now + l.ping
		c.busy = false // until the next data frame: see keptQueue
	}
}

// noticeLocked returns the expiry (unix ns) an open connection is to be
// given notice of now, once per value, else 0.
func (l *loop) noticeLocked(c *Conn, now int64) int64 {
	if !c.notices || c.io.noticed || c.io.expiry == 0 || c.state != stateOpen {
		return 0
	}
	if now < c.io.expiry-int64(l.srv.cfg.ExpiryNotice) {
		return 0
	}
	c.io.noticed = true
	return c.expiry
}

// read drains the socket (edge-triggered: until EAGAIN, or a short read) and
// parses what came. hup: the event reported the peer's FIN, which came with
// this edge and brings no new one, so read on to EOF even after a short read.
func (l *loop) read(c *Conn, hup bool) {
	for i := 0; ; i++ {
		off := copy(l.buf, c.rd.pend)
		n, err := rawRead(int(c.io.fd), l.buf[off:])
		if n > 0 {
			c.io.lastRecv = l.now
			c.feed(l.buf[:off+n])
			if off+n < len(l.buf) && !hup {
				break // short read: the socket is empty, the next data is a new edge
			}
			if i == maxReadsPerRun {
				if !c.io.again {
					c.io.again = true
					l.again = append(l.again, c)
				}
				break
			}
			continue
		}
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		// EOF or a socket error: the peer is gone.
		l.closeFD(c, c.goneCode())
		return
	}
	l.flush(c)
}

// flush writes queued frames with writev until the queue is empty or the
// socket is full, then advances a closing connection.
func (l *loop) flush(c *Conn) {
	for c.io.fd >= 0 {
		c.mu.Lock()
		c.scheduled = false
		if c.cutPending {
			c.applyCutLocked()
		}
		if c.retime && c.state == stateOpen {
			// SetExpiry's wake-up: earlier or later, the timer moves.
			l.loadExpiryLocked(c)
			l.schedule(c)
		}
		if len(c.queue) == 0 || c.blocked {
			closing, empty := c.state == stateClosing, len(c.queue) == 0
			c.mu.Unlock()
			if closing {
				l.closing(c, empty)
			}
			return
		}
		iov, total := l.iovecsLocked(c)
		c.mu.Unlock()

		// Frames are immutable and only this goroutine removes them from the
		// queue, so the write needs no lock; Send keeps appending meanwhile.
		n, err := writev(int(c.io.fd), iov)
		clear(iov)
		c.mu.Lock()
		if n > 0 {
			c.consumeLocked(n)
		}
		if err == unix.EAGAIN || (err == nil && n < total) {
			c.blocked = true // EPOLLOUT (edge-triggered) resumes the flush
		}
		c.mu.Unlock()
		if err != nil && err != unix.EAGAIN && err != unix.EINTR {
			l.closeFD(c, CloseAbnormal)
			return
		}
	}
}

// iovecsLocked points the loop's iovec array at c's queued frames (at most
// maxIOV of them) and returns it with the bytes it covers.
func (l *loop) iovecsLocked(c *Conn) ([]unix.Iovec, int) {
	iov, total := l.iov[:0], 0
	for i, qf := range c.queue {
		if i == maxIOV {
			break
		}
		f := qf.b
		if i == 0 {
			f = f[c.head:]
		}
		v := unix.Iovec{Base: &f[0]}
		v.SetLen(len(f))
		iov = append(iov, v)
		total += len(f)
	}
	return iov, total
}

// closing advances the closing handshake: arm the deadline; once our close
// frame is out, half-close (FIN after it, so the peer reads it before any
// reset) and wait for the peer's close or EOF; close at once if the peer's
// close frame already came or the input was invalid.
func (l *loop) closing(c *Conn, flushed bool) {
	if c.io.closeAt == 0 {
		c.io.closeAt = l.now + int64(l.srv.cfg.CloseTimeout)
		l.wheel.schedule(c, c.io.closeAt)
	}
	if !flushed {
		return
	}
	if !c.io.shutWR {
		c.io.shutWR = true
		_ = unix.Shutdown(int(c.io.fd), unix.SHUT_WR)
	}
	// After invalid input we still wait for the peer's EOF (or the deadline),
	// so that our close frame is read before the socket goes.
	if c.closesWithoutHandshake() {
		l.closeFD(c, c.getCloseCode())
	}
}

// closesWithoutHandshake: the socket closes as soon as our last bytes are out.
func (c *Conn) closesWithoutHandshake() bool { return c.raw != nil || c.rd.peerClosed }

func (l *loop) closeFD(c *Conn, code int) {
	fd := int(c.io.fd)
	if fd < 0 {
		return
	}
	l.conns[fd] = nil
	l.wheel.remove(c)
	c.rd = readState{}
	c.mu.Lock()
	// Under the lock: a sender writing directly checks fd under it, and must
	// never see a number the kernel may already have given to a new socket.
	c.io.fd = -1
	c.state = stateClosed
	c.dropQueueLocked() // nobody writes from it now: the loop is here
	dropped := c.dropped
	c.mu.Unlock()
	rawClose(fd)
	c.handler.OnClose(c, CloseInfo{Code: code, Dropped: int(dropped)})
}

// writeNowLocked writes frame to the socket at once (Send's fast path) and
// returns how many bytes the kernel took. The caller holds c.mu, so the loop
// can neither close the descriptor nor write concurrently.
func (c *Conn) writeNowLocked(frame []byte) (n int, tried bool) {
	fd := int(c.io.fd)
	if fd < 0 {
		return 0, false
	}
	for {
		n, err := rawWrite(fd, frame)
		if err == unix.EINTR {
			continue
		}
		// EAGAIN and errors: the loop retries on EPOLLOUT, and sees a dead
		// socket through its own events.
		return max(n, 0), true
	}
}

//go:build linux && !notify_noepoll

package transport

import (
	"net"

	"golang.org/x/sys/unix"
)

// relayEnd is one socket of a relayed pair. Bytes read from one end are
// written to the other at once; what the other end cannot take yet waits in
// its pending buffer, and reading stops until it drains. An idle pair holds
// no buffer.
type relayEnd struct {
	fd      int32
	peer    *relayEnd
	pair    *relayPair
	pending []byte // bytes read from peer, not yet written to this end
	paused  bool   // reading this end waits for peer.pending to drain
	eof     bool   // this end's input ended
	shut    bool   // this end's output was shut down (after peer's EOF)
	again   bool   // on the loop's list of ends with unread input
	hup     bool   // the peer's FIN was reported: read on to EOF after short reads
}

type relayPair struct {
	ends    [2]relayEnd
	onClose func()
	closed  bool
}

// attachRelay runs on the caller's goroutine: it takes both sockets out of
// Go's poller and queues the pair for the loop.
func (l *loop) attachRelay(a net.Conn, aBuf []byte, b net.Conn, bBuf []byte, onClose func()) error {
	fa, err := detach(a)
	if err != nil {
		b.Close()
		return err
	}
	fb, err := detach(b)
	if err != nil {
		unix.Close(fa)
		return err
	}
	p := &relayPair{onClose: onClose}
	p.ends[0] = relayEnd{fd: int32(fa), pair: p, pending: append([]byte(nil), bBuf...)}
	p.ends[1] = relayEnd{fd: int32(fb), pair: p, pending: append([]byte(nil), aBuf...)}
	p.ends[0].peer, p.ends[1].peer = &p.ends[1], &p.ends[0]
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		unix.Close(fa)
		unix.Close(fb)
		return ErrServerClosed
	}
	l.relayAdds = append(l.relayAdds, p)
	l.unlockAndSignal()
	return nil
}

func (l *loop) registerRelay(p *relayPair) {
	for i := range p.ends {
		e := &p.ends[i]
		fd := int(e.fd)
		l.relays = fit(l.relays, fd)
		l.relays[fd] = e
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.srv.log.Error("epoll_ctl add relay failed", "err", err)
			l.closeRelay(p)
			return
		}
	}
	// Bytes read ahead during the handshakes go out first; then the edges
	// of both sockets drive the pair.
	l.relayFlush(&p.ends[0])
	l.relayFlush(&p.ends[1])
}

// relayEvent handles epoll events of one end.
func (l *loop) relayEvent(e *relayEnd, events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		e.hup = e.hup || events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0
		l.relayRead(e)
	}
	if events&unix.EPOLLOUT != 0 && !e.pair.closed {
		l.relayFlush(e)
	}
}

// relayRead moves bytes from src to its peer until src is empty, the peer
// is full, or src has had its share of this loop turn.
func (l *loop) relayRead(src *relayEnd) {
	dst := src.peer
	for i := 0; !src.paused && !src.eof && !src.pair.closed; i++ {
		if i == maxReadsPerRun {
			if !src.again {
				src.again = true
				l.relayAgain = append(l.relayAgain, src)
			}
			return
		}
		n, err := rawRead(int(src.fd), l.buf)
		switch {
		case n > 0:
			w, werr := writeAll(int(dst.fd), l.buf[:n])
			if werr != nil {
				l.closeRelay(src.pair)
				return
			}
			if w < n {
				dst.pending = append(dst.pending[:0], l.buf[w:n]...)
				src.paused = true // resumed by dst's EPOLLOUT
				return
			}
			if n < len(l.buf) && !src.hup {
				return // short read: drained, the next data is a new edge
			}
		case n == 0 && err == nil:
			src.eof = true
			if len(dst.pending) == 0 {
				l.relayShut(dst)
			}
			return
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return
		default:
			l.closeRelay(src.pair)
			return
		}
	}
}

// relayFlush writes dst's pending bytes; once they are out, the peer is read
// again (or, after its EOF, dst's output is shut down).
func (l *loop) relayFlush(dst *relayEnd) {
	if len(dst.pending) > 0 {
		w, err := writeAll(int(dst.fd), dst.pending)
		if err != nil {
			l.closeRelay(dst.pair)
			return
		}
		if w < len(dst.pending) {
			dst.pending = dst.pending[:copy(dst.pending, dst.pending[w:])]
			return
		}
		dst.pending = nil
	}
	src := dst.peer
	switch {
	case src.paused:
		src.paused = false
		l.relayRead(src)
	case src.eof:
		l.relayShut(dst)
	}
}

// relayShut forwards an EOF: dst gets no more bytes. When both directions
// have ended the pair is closed.
func (l *loop) relayShut(dst *relayEnd) {
	if !dst.shut {
		dst.shut = true
		_ = unix.Shutdown(int(dst.fd), unix.SHUT_WR)
	}
	if dst.eof && dst.peer.shut {
		l.closeRelay(dst.pair)
	}
}

func (l *loop) closeRelay(p *relayPair) {
	if p.closed {
		return
	}
	p.closed = true
	for i := range p.ends {
		e := &p.ends[i]
		if e.fd >= 0 {
			// A pair closed before it was registered (the loop stopped) is in
			// no table yet.
			if int(e.fd) < len(l.relays) {
				l.relays[e.fd] = nil
			}
			unix.Close(int(e.fd))
			e.fd = -1
		}
		e.pending = nil
	}
	if p.onClose != nil {
		p.onClose()
	}
}

// writeAll writes b without blocking and returns how much the socket took.
// EAGAIN is not an error.
func writeAll(fd int, b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := rawWrite(fd, b[done:])
		switch {
		case n > 0:
			done += n
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return done, nil
		default:
			return done, err
		}
	}
	return done, nil
}

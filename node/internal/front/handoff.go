package front

import (
	"net"
	"sync"
)

// handOff is the listener net/http serves: its Accept returns the
// connections the front passes on (push).
type handOff struct {
	addr      net.Addr
	conns     chan net.Conn // unbuffered: push returns once Serve has taken the connection
	closed    chan struct{}
	closeOnce sync.Once
}

var _ net.Listener = (*handOff)(nil)

func newHandOff(addr net.Addr) *handOff {
	return &handOff{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push passes nc to net/http; false: the listener is closed (nc is still
// the caller's).
func (h *handOff) push(nc net.Conn) bool {
	select {
	case h.conns <- nc:
		return true
	case <-h.closed:
		return false
	}
}

func (h *handOff) Accept() (net.Conn, error) {
	select {
	case nc := <-h.conns:
		return nc, nil
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and push return; the front closes the real listener.
func (h *handOff) Close() error {
	h.closeOnce.Do(func() { close(h.closed) })
	return nil
}

func (h *handOff) Addr() net.Addr { return h.addr }

//go:build !linux || notify_noepoll

package transport

import (
	"io"
	"net"
	"sync"
)

// relayPair is a relayed pair of connections, known to the loop so that
// stop can end it.
type relayPair struct{ a, b net.Conn }

// attachRelay, fallback: a goroutine per direction.
func (l *loop) attachRelay(a net.Conn, aBuf []byte, b net.Conn, bBuf []byte, onClose func()) error {
	p := &relayPair{a, b}
	l.mu.Lock()
	if l.stopd {
		l.mu.Unlock()
		a.Close()
		b.Close()
		return ErrServerClosed
	}
	l.relays[p] = struct{}{}
	l.relayWG.Add(1)
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go pipe(&wg, b, a, aBuf)
	go pipe(&wg, a, b, bBuf)
	go func() {
		defer l.relayWG.Done()
		wg.Wait()
		a.Close()
		b.Close()
		l.mu.Lock()
		delete(l.relays, p)
		l.mu.Unlock()
		if onClose != nil {
			onClose()
		}
	}()
	return nil
}

// pipe copies src to dst, first bytes first, then passes src's EOF on.
func pipe(wg *sync.WaitGroup, dst, src net.Conn, first []byte) {
	defer wg.Done()
	if len(first) > 0 {
		if _, err := dst.Write(first); err != nil {
			return
		}
	}
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

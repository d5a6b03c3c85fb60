//go:build !linux || notify_noepoll

package transport

import (
	"io"
	"net"
	"sync"
)

// attachRelay, fallback: a goroutine per direction.
func (l *loop) attachRelay(a net.Conn, aBuf []byte, b net.Conn, bBuf []byte, onClose func()) error {
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn, first []byte) {
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
	wg.Add(2)
	go pipe(b, a, aBuf)
	go pipe(a, b, bBuf)
	go func() {
		wg.Wait()
		a.Close()
		b.Close()
		if onClose != nil {
			onClose()
		}
	}()
	return nil
}

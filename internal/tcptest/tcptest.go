// Package tcptest gives tests real TCP connections over loopback.
package tcptest

import (
	"net"
	"testing"
)

// Pair returns both ends of a real TCP connection over loopback: the end
// that dialed and the end that was accepted. Both close with the test.
func Pair(t testing.TB) (dialed, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	dialed, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err) // the listener's close above ends the accept
	}
	accepted = <-ch
	if accepted == nil {
		dialed.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = dialed.Close(); _ = accepted.Close() })
	return dialed, accepted
}

// Listen listens on loopback until the test ends and returns its address.
// Each accepted connection goes to handle, on the accepting goroutine (nil:
// held, unanswered). When the test ends the listener closes, the accepting
// goroutine ends and every accepted connection is closed.
func Listen(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // the accepting goroutine's until done
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			if handle != nil {
				handle(c)
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

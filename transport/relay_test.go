package transport

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/tcptest"
)

func TestRelayMovesBytesBothWays(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	client, a := tcptest.Pair(t) // client <-> a (this node)
	b, owner := tcptest.Pair(t)  // b (this node) <-> owner
	// Small, fixed socket buffers (no autotuning) make the backpressure
	// bound below tight.
	for _, c := range []net.Conn{client, a, b, owner} {
		tc := c.(*net.TCPConn)
		if err := tc.SetReadBuffer(relayTestSockBuf); err != nil {
			t.Fatal(err)
		}
		if err := tc.SetWriteBuffer(relayTestSockBuf); err != nil {
			t.Fatal(err)
		}
	}
	var closed atomic.Int32
	done := make(chan struct{})
	if err := ts.srv.Relay(a, []byte("ahead-from-client;"), b, []byte("ahead-from-owner;"), func() {
		if closed.Add(1) == 1 {
			close(done)
		}
	}); err != nil {
		t.Fatal(err)
	}

	// Bytes read ahead go first, in each direction.
	expect := func(c net.Conn, want string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Fatalf("got %q %v, want %q", got, err, want)
		}
	}
	expect(client, "ahead-from-owner;")
	expect(owner, "ahead-from-client;")

	checkBackpressure(t, owner, client)
	// And the other way.
	if _, err := client.Write([]byte("ping from client")); err != nil {
		t.Fatal(err)
	}
	expect(owner, "ping from client")

	// The owner ends: the client reads EOF; the client ends: the pair closes.
	owner.(*net.TCPConn).CloseWrite()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read %d %v, want EOF", n, err)
	}
	client.(*net.TCPConn).CloseWrite()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("pair not closed after both directions ended")
	}
	if closed.Load() != 1 {
		t.Fatalf("onClose ran %d times", closed.Load())
	}
}

// relayTestSockBuf is the SO_RCVBUF and SO_SNDBUF of the relay test's
// sockets.
const relayTestSockBuf = 32 << 10

// checkBackpressure: 20 MB from the owner to a client that reads nothing
// at first. The relay must hold back: the owner's write stops once the
// buffers on the way are full, short of a bound far below 20 MB (a relay
// that buffered what the client cannot take would let it all through).
// Then the client reads, and every byte arrives intact.
func checkBackpressure(t *testing.T, owner, client net.Conn) {
	t.Helper()
	big := make([]byte, 20<<20)
	_, _ = rand.Read(big)
	_ = owner.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := owner.Write(big)
	if !isTimeout(err) {
		t.Fatalf("owner wrote %d bytes (%v) to a client that reads nothing: want its write held back", n, err)
	}
	// Linux doubles each buffer size set. On the way: the owner's send
	// buffer, this node's receive buffer from the owner, its send buffer to
	// the client and the client's receive buffer; the relay itself holds at
	// most one read buffer (the loop's 64 KiB, readBufferSize; the
	// fallback's copy less). Twice that sum leaves room for TCP's accounting.
	const relayHolds = 64 << 10
	const bound = 2 * (4*2*relayTestSockBuf + relayHolds)
	if n > bound {
		t.Fatalf("owner wrote %d bytes to a client that reads nothing: more than the %d the buffers on the way hold", n, bound)
	}
	t.Logf("owner held back after %d bytes (bound %d)", n, bound)
	_ = owner.SetWriteDeadline(time.Time{})
	wrote := make(chan error, 1)
	go func() {
		_, err := owner.Write(big[n:])
		wrote <- err
	}()
	got := make([]byte, len(big))
	_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("20 MB arrived damaged or short: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("owner's write of the rest: %v", err)
	}
}

func TestRelayPeerReset(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	client, a := tcptest.Pair(t)
	b, owner := tcptest.Pair(t)
	done := make(chan struct{})
	if err := ts.srv.Relay(a, nil, b, nil, func() { close(done) }); err != nil {
		t.Fatal(err)
	}
	owner.(*net.TCPConn).SetLinger(0)
	owner.Close() // RST
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read: %v, want EOF or a connection reset: the owner vanished", err)
	}
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("pair not closed")
	}
}

// TestRelayDataWithFIN: bytes and the FIN in one go; the EOF is seen although
// it brings no edge of its own.
func TestRelayDataWithFIN(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	for i := 0; i < 20; i++ {
		client, a := tcptest.Pair(t)
		b, owner := tcptest.Pair(t)
		done := make(chan struct{})
		if err := ts.srv.Relay(a, nil, b, nil, func() { close(done) }); err != nil {
			t.Fatal(err)
		}
		client.Write([]byte("last words"))
		client.(*net.TCPConn).CloseWrite()
		_ = owner.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(owner)
		if err != nil || string(got) != "last words" {
			t.Fatalf("round %d: owner read %q %v, want the words then EOF", i, got, err)
		}
		owner.(*net.TCPConn).CloseWrite()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: pair not closed", i)
		}
	}
}

// TestRelayThenClose: Close right after Relay, before or after the loop has
// taken the pair: both sockets close and onClose runs once.
func TestRelayThenClose(t *testing.T) {
	for i := 0; i < 30; i++ {
		cfg := testConfig()
		cfg.Loops = 1
		srv, err := NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		client, a := tcptest.Pair(t)
		b, owner := tcptest.Pair(t)
		var closes atomic.Int32
		if err := srv.Relay(a, nil, b, nil, func() { closes.Add(1) }); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		for _, c := range []net.Conn{client, owner} {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("round %d: read after Close: %v, want the connection ended", i, err)
			}
		}
		await.True(t, "onClose", func() bool { return closes.Load() == 1 })
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

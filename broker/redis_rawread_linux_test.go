package broker

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/tcptest"
)

// TestRawReader: the raw read gives what conn.Read would: the bytes once
// they come (waiting for them in the poller), a timeout error at the read
// deadline, io.EOF when the peer closes, a reset as an error, and an error
// once the conn is closed; a conn that is not a socket gets none.
func TestRawReader(t *testing.T) {
	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	tests := []struct {
		name string
		act  func(t *testing.T, local, peer net.Conn)
		want []byte
		ok   func(error) bool
	}{
		{"data", func(t *testing.T, _, peer net.Conn) {
			if _, err := peer.Write([]byte("*3\r\n")); err != nil {
				t.Fatal(err)
			}
		}, []byte("*3\r\n"), func(err error) bool { return err == nil }},
		{"data later", func(_ *testing.T, _, peer net.Conn) {
			go func() {
				time.Sleep(50 * time.Millisecond) // the read is parked in the poller by then (or reads at once: either way the bytes)
				_, _ = peer.Write([]byte("later"))
			}()
		}, []byte("later"), func(err error) bool { return err == nil }},
		{"deadline", func(t *testing.T, local, _ net.Conn) {
			if err := local.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}, nil, isTimeout},
		{"peer closes", func(_ *testing.T, _, peer net.Conn) { _ = peer.Close() }, nil,
			func(err error) bool { return err == io.EOF }},
		{"peer resets", func(t *testing.T, _, peer net.Conn) {
			if err := peer.(*net.TCPConn).SetLinger(0); err != nil {
				t.Fatal(err)
			}
			_ = peer.Close()
		}, nil, func(err error) bool {
			var oe *net.OpError
			return errors.As(err, &oe) && err != io.EOF && !isTimeout(err)
		}},
		{"closed here", func(_ *testing.T, local, _ net.Conn) { _ = local.Close() }, nil,
			func(err error) bool { return errors.Is(err, net.ErrClosed) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, peer := tcptest.Pair(t)
			read := rawReader(local)
			if read == nil {
				t.Fatal("no raw reader for a TCP conn")
			}
			tt.act(t, local, peer)
			p := make([]byte, 64)
			n, err := read(p)
			if !tt.ok(err) {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(p[:n], tt.want) {
				t.Fatalf("read %q, want %q", p[:n], tt.want)
			}
		})
	}
	if read := rawReader(struct{ net.Conn }{}); read != nil {
		t.Fatal("a raw reader for a conn that is not a socket")
	}
}

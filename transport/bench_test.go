package transport

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

func BenchmarkDataFrame100B(b *testing.B) {
	p := strings.Repeat("x", 100)
	b.ReportAllocs()
	for b.Loop() {
		_ = DataFrame(p)
	}
}

// BenchmarkParseFrames: client frames (masked, 100-byte text) through the
// parser, discarding the payload as /notify/ws does.
func BenchmarkParseFrames(b *testing.B) {
	frame := clientFrame(true, 0, opText, true, bytes.Repeat([]byte("y"), 100))
	in := bytes.Repeat(frame, 100)
	buf := make([]byte, len(in))
	srv := &Server{cfg: Config{MaxMessageSize: 4096, SendQueueBytes: 1 << 20}}
	c := srv.NewConn(ConnOptions{Handler: &parseRecorder{}})
	c.state = stateOpen
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, in)
		c.feed(buf)
	}
}

func BenchmarkUTF8Validator(b *testing.B) {
	p := []byte(strings.Repeat("héllo wörld ", 100))
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		var v utf8Validator
		if !v.write(p) {
			b.Fatal("invalid")
		}
	}
}

// BenchmarkLoopFlush: 100-byte frames queued with Enqueue and written by the
// driver (an event loop on Linux), coalesced, to a client that reads them as
// they come.
func BenchmarkLoopFlush(b *testing.B) {
	ts := startServer(b, testConfig(), serverOpts{})
	rc := dialRaw(b, ts.addr, nil)
	c := ts.nextConn(b)
	frame := DataFrame(strings.Repeat("x", 100))
	want := int64(b.N) * int64(len(frame))
	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for got.Load() < want {
			n, err := rc.br.Read(buf)
			if err != nil {
				done <- err
				return
			}
			got.Add(int64(n))
		}
		done <- nil
	}()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := int64(0); i < int64(b.N); i++ {
		// Stay well within the send queue (256 KiB by default).
		for i*int64(len(frame))-got.Load() > 64<<10 {
			runtime.Gosched()
		}
		if !c.Enqueue(frame) {
			b.Fatalf("frame %d refused", i)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoopPingPong: a client ping answered by the server's pong, one at
// a time: readiness, read, parse and flush on the driver per round trip.
func BenchmarkLoopPingPong(b *testing.B) {
	ts := startServer(b, testConfig(), serverOpts{})
	rc := dialRaw(b, ts.addr, nil)
	ts.nextConn(b)
	ping := clientFrame(true, 0, opPing, true, []byte("p"))
	pong := make([]byte, 3)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := rc.nc.Write(ping); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(rc.br, pong); err != nil || pong[0] != 0x80|opPong {
			b.Fatalf("pong %x %v", pong, err)
		}
	}
}

package transport

import (
	"bytes"
	"strings"
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
	srv := &Server{cfg: Config{MaxMessageSize: 4096, SendQueueBytes: 1 << 20, Handler: &parseRecorder{}}}
	c := srv.NewConn(ConnOptions{})
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

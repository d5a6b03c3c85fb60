package transport

import (
	"bytes"
	"fmt"
	"testing"
	"unicode/utf8"
)

// parseRecorder collects what the parser produced.
type parseRecorder struct{ out bytes.Buffer }

func (r *parseRecorder) OnMessage(_ *Conn, text bool, p []byte) {
	fmt.Fprintf(&r.out, "msg %v %q\n", text, p)
}
func (r *parseRecorder) OnClose(*Conn, CloseInfo) {}

// parseAll feeds data to a fresh connection in chunks of at most step bytes
// (0 = all at once) the way a driver does, carrying incomplete frames over,
// and returns a transcript of everything the parser did.
func parseAll(data []byte, step int, messages bool) string {
	rec := &parseRecorder{}
	srv := &Server{cfg: Config{MaxMessageSize: 4096, SendQueueBytes: 1 << 20}}
	c := srv.NewConn(ConnOptions{Messages: messages, Handler: rec})
	c.state = stateOpen
	data = append([]byte(nil), data...) // the parser unmasks in place
	if step <= 0 {
		step = len(data)
	}
	buf := make([]byte, 0, 4096+len(data))
	for len(data) > 0 && !c.rd.done {
		n := min(step, len(data))
		buf = append(append(buf[:0], c.rd.pend...), data[:n]...)
		data = data[n:]
		c.feed(buf)
	}
	for _, f := range c.queue {
		fmt.Fprintf(&rec.out, "sent %x\n", f.b)
	}
	fmt.Fprintf(&rec.out, "done=%v peerClosed=%v state=%d code=%d", c.rd.done, c.rd.peerClosed, c.state, c.closeCode)
	return rec.out.String()
}

func parserSeeds() [][]byte {
	return [][]byte{
		clientFrame(true, 0, opText, true, []byte("hello")),
		clientFrame(true, 0, opPing, true, []byte("ping")),
		append(clientFrame(false, 0, opText, true, []byte("he")), clientFrame(true, 0, opContinuation, true, []byte("llo"))...),
		append(clientFrame(false, 0, opBinary, true, []byte{1}), append(clientFrame(true, 0, opPing, true, nil), clientFrame(true, 0, opContinuation, true, []byte{2})...)...),
		clientFrame(true, 0, opClose, true, closePayload(1000, "bye")),
		clientFrame(true, 0, opText, false, []byte("unmasked")),
		clientFrame(true, 0, opText, true, []byte{0xed, 0xa0, 0x80}),
		clientFrame(true, 0, opBinary, true, bytes.Repeat([]byte{7}, 300)),
		clientFrame(true, 0, opBinary, true, bytes.Repeat([]byte{7}, 70000)),
		{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0},
	}
}

// FuzzParser: any input, split anywhere, never panics and gives the same
// result as the whole input at once.
func FuzzParser(f *testing.F) {
	for _, s := range parserSeeds() {
		f.Add(s, uint16(1), true)
		f.Add(s, uint16(7), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint16, messages bool) {
		whole := parseAll(data, 0, messages)
		split := parseAll(data, int(step%200)+1, messages)
		if whole != split {
			t.Fatalf("split at %d differs:\nwhole: %s\nsplit: %s", step%200+1, whole, split)
		}
	})
}

// FuzzUTF8: the incremental validator agrees with unicode/utf8 wherever the
// input is cut.
func FuzzUTF8(f *testing.F) {
	for _, s := range []string{"", "abc", "€uro", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe0\x80\xaf", "\xf0\x9f\x98\x80 ok", "\xc2"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, p []byte, cut uint8) {
		var v utf8Validator
		ok := true
		for rest := p; len(rest) > 0 && ok; {
			n := min(int(cut%8)+1, len(rest))
			ok = v.write(rest[:n])
			rest = rest[n:]
		}
		ok = ok && v.complete()
		if ok != utf8.Valid(p) {
			t.Fatalf("validator says %v, utf8.Valid says %v for %x", ok, !ok, p)
		}
	})
}

func TestParserTranscripts(t *testing.T) {
	for i, s := range parserSeeds() {
		if a, b := parseAll(s, 0, true), parseAll(s, 1, true); a != b {
			t.Fatalf("seed %d: byte-by-byte differs:\n%s\n%s", i, a, b)
		}
	}
}

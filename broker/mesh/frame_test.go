package mesh

import (
	"bufio"
	"bytes"
	"errors"
	"maps"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	fields := map[string]string{"a": "1", "": "empty key", "long": string(bytes.Repeat([]byte{'x'}, 300))}
	tests := []struct {
		name  string
		frame []byte
		check func(t *testing.T, typ byte, body []byte)
	}{
		{"msg", append(appendMsgHeader(nil, 42, "notify:7", 5), "hello"...), func(t *testing.T, typ byte, body []byte) {
			f, err := decodeMsg(body)
			if err != nil || typ != frameMsg || f.seq != 42 || f.channel != "notify:7" || string(f.payload) != "hello" {
				t.Fatalf("%d %+v %v", typ, f, err)
			}
		}},
		{"empty msg", appendMsgHeader(nil, 1, "", 0), func(t *testing.T, typ byte, body []byte) {
			f, err := decodeMsg(body)
			if err != nil || f.seq != 1 || f.channel != "" || len(f.payload) != 0 {
				t.Fatalf("%+v %v", f, err)
			}
		}},
		{"ping", appendPing(nil), func(t *testing.T, typ byte, body []byte) {
			if typ != framePing || len(body) != 0 {
				t.Fatalf("%d %q", typ, body)
			}
		}},
		{"ack", appendAck(nil, 1<<40), func(t *testing.T, typ byte, body []byte) {
			if seq, err := decodeAck(body); err != nil || typ != frameAck || seq != 1<<40 {
				t.Fatalf("%d %d %v", typ, seq, err)
			}
		}},
		{"call", appendCall(nil, 9, opMerge, "user", fields), func(t *testing.T, typ byte, body []byte) {
			c, err := decodeCall(body)
			if err != nil || typ != frameCall || c.id != 9 || c.op != opMerge || c.user != "user" || !maps.Equal(c.fields, fields) {
				t.Fatalf("%d %+v %v", typ, c, err)
			}
		}},
		{"reply", appendReply(nil, 3, fields, nil), func(t *testing.T, typ byte, body []byte) {
			r, err := decodeReply(body)
			if err != nil || typ != frameReply || r.id != 3 || r.err != "" || !maps.Equal(r.fields, fields) {
				t.Fatalf("%+v %v", r, err)
			}
		}},
		{"error reply", appendReply(nil, 4, nil, errors.New("boom")), func(t *testing.T, typ byte, body []byte) {
			if r, err := decodeReply(body); err != nil || r.id != 4 || r.err != "boom" {
				t.Fatalf("%+v %v", r, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Two copies back to back: a frame ends where its length says.
			br := bufio.NewReader(bytes.NewReader(append(bytes.Clone(tt.frame), tt.frame...)))
			var buf []byte
			for range 2 {
				typ, body, grown, err := readFrame(br, buf, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				buf = grown
				tt.check(t, typ, body)
			}
		})
	}
}

// TestReadFrameBounds: a length of zero or beyond the bound is refused
// before anything is allocated for it.
func TestReadFrameBounds(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"zero length", []byte{0, 0, 0, 0}},
		{"too long", []byte{0, 1, 0, 1, frameMsg}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(tt.in)), nil, 1<<16)
			if !errors.Is(err, errFrame) {
				t.Fatalf("err %v, want errFrame", err)
			}
		})
	}
}

// TestDecodeTruncated: every truncation of every frame body is an error,
// never a panic or a wrong value taken for good.
func TestDecodeTruncated(t *testing.T) {
	decoders := map[byte]func([]byte) error{
		frameMsg:   func(b []byte) error { _, err := decodeMsg(b); return err },
		frameAck:   func(b []byte) error { _, err := decodeAck(b); return err },
		frameCall:  func(b []byte) error { _, err := decodeCall(b); return err },
		frameReply: func(b []byte) error { _, err := decodeReply(b); return err },
	}
	frames := [][]byte{
		appendAck(nil, 1<<40),
		appendCall(nil, 9, opSet, "user", map[string]string{"k": "v"}),
		appendReply(nil, 3, map[string]string{"k": "v"}, nil),
		appendReply(nil, 4, nil, errors.New("boom")),
	}
	for _, f := range frames {
		typ, body := f[frameHeader], f[frameHeader+1:]
		for n := range len(body) {
			if err := decoders[typ](body[:n]); err == nil {
				t.Errorf("type %d cut to %d of %d bytes decoded", typ, n, len(body))
			}
		}
	}
}

// FuzzDecodeFrame: no body makes a decoder panic or allocate beyond it.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(appendCall(nil, 1, opGet, "u", nil)[frameHeader:])
	f.Add(appendReply(nil, 1, map[string]string{"a": "b"}, nil)[frameHeader:])
	f.Add(appendMsgHeader(nil, 1, "notify:1", 0)[frameHeader:])
	f.Add([]byte{frameReply, 1, statusOK, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		body := b[1:]
		switch b[0] {
		case frameMsg:
			_, _ = decodeMsg(body)
		case frameAck:
			_, _ = decodeAck(body)
		case frameCall:
			_, _ = decodeCall(body)
		default:
			_, _ = decodeReply(body)
		}
	})
}

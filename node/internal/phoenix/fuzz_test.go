package phoenix

import (
	"bytes"
	"testing"
)

// FuzzDecodeText: any client text frame decodes or is refused without a
// panic, and what decodes encodes back to a message that decodes the same.
func FuzzDecodeText(f *testing.F) {
	for _, s := range []string{
		`["1","1","user:1","phx_join",{}]`, `[null,"2","phoenix","heartbeat",{}]`, `[1,2,"t","e",null]`,
		`{"topic":"user:1","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`, `[]`, `{}`, `["1","1",3,"e",{}]`,
	} {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, vsn1 bool, b []byte) {
		m, err := decodeText(vsn1, b)
		if err != nil {
			return
		}
		again, err := decodeText(vsn1, encode(vsn1, m))
		if err != nil || again.topic != m.topic || again.event != m.event {
			t.Fatalf("%q: re-encoded as %q: %+v %v", b, encode(vsn1, m), again, err)
		}
	})
}

// FuzzDecodeBinary: phoenix.js's binary frames decode or are refused
// without a panic; topic and event are valid UTF-8 within the frame.
func FuzzDecodeBinary(f *testing.F) {
	f.Add([]byte("\x00\x01\x06\x05" + "1" + "user:1" + "event" + "payload"))
	f.Add([]byte{0, 255, 255, 255})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeBinary(b)
		if err != nil {
			return
		}
		if len(m.topic)+len(m.event) > len(b) || !bytes.Contains(b, []byte(m.topic)) {
			t.Fatalf("%q decoded to %+v", b, m)
		}
	})
}

// FuzzLongPollBody: any long-poll POST body parses or is refused without a
// panic, and never yields more than maxLines messages.
func FuzzLongPollBody(f *testing.F) {
	f.Add(false, []byte("[null,\"1\",\"phoenix\",\"heartbeat\",{}]\n[\"2\",\"2\",\"user:1\",\"phx_join\",{}]\n"))
	f.Add(true, []byte("{\"topic\":\"phoenix\",\"event\":\"heartbeat\",\"payload\":{},\"ref\":\"1\"}\r\n\n"))
	f.Add(false, []byte("\n\n  \n"))
	f.Add(false, []byte("not json\n"))
	f.Fuzz(func(t *testing.T, vsn1 bool, body []byte) {
		msgs, err := parseBody(vsn1, body, 4096)
		if err == nil && len(msgs) > maxLines {
			t.Fatalf("%d messages", len(msgs))
		}
	})
}

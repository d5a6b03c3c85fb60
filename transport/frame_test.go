package transport

import (
	"bytes"
	"strings"
	"testing"
)

func TestFramePayload(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 70000} {
		payload := strings.Repeat("x", n)
		for _, f := range [][]byte{DataFrame(payload), TextFrame([]byte(payload)), DataFrame(payload + "\xff")} {
			want := []byte(payload)
			if f[0]&0x0f == opBinary {
				want = append(want, 0xff)
			}
			if got := FramePayload(f); !bytes.Equal(got, want) {
				t.Fatalf("payload of %d bytes: got %d bytes back", n, len(got))
			}
		}
	}
}

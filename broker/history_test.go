package broker

import (
	"errors"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	tests := []struct {
		in   string
		want Cursor
		bad  bool
	}{
		{"", Cursor{}, false},
		{"1733050000123456:1", Cursor{"1733050000123456", 1}, false},
		{"abc:18446744073709551615", Cursor{"abc", 18446744073709551615}, false},
		{"abc", Cursor{}, true},
		{":1", Cursor{}, true},
		{"abc:0", Cursor{}, true},
		{"0:0", Cursor{OriginEpoch, 0}, false},
		{"0:1764590000123", Cursor{OriginEpoch, 1764590000123}, false},
		{"abc:-1", Cursor{}, true},
		{"abc:1:2", Cursor{}, true},
		{"a b:1", Cursor{}, true},
		{"abc:18446744073709551616", Cursor{}, true},
		{string(make([]byte, 65)) + ":1", Cursor{}, true},
	}
	for _, tt := range tests {
		got, err := ParseCursor(tt.in)
		if tt.bad {
			if !errors.Is(err, ErrBadCursor) {
				t.Errorf("ParseCursor(%q) = %v, %v; want ErrBadCursor", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want || got.String() != tt.in {
			t.Errorf("ParseCursor(%q) = %v %v, String %q", tt.in, got, err, got.String())
		}
	}
}

func TestMessageWireFormat(t *testing.T) {
	tests := []Message{
		{Payload: "plain"},
		{Payload: "", Cursor: Cursor{"e", 1}},
		{Payload: "with\x00nul", Cursor: Cursor{"e", 42}, Event: "score"},
		{Payload: historyMagic + "looks like ours", Cursor: Cursor{"e", 7}},
	}
	for _, m := range tests {
		if got := decodeMessage(encodeMessage(m)); got != m {
			t.Errorf("round trip of %+v gave %+v", m, got)
		}
	}
	// A payload that only starts like ours is delivered verbatim.
	for _, p := range []string{historyMagic, historyMagic + "no-cursor\x00x", historyMagic + "e:1"} {
		if got := decodeMessage(p); got.Payload != p || !got.Cursor.IsZero() {
			t.Errorf("decodeMessage(%q) = %+v, want it verbatim", p, got)
		}
	}
}

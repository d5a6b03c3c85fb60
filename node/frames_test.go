package node

import "testing"

func TestSSEEvent(t *testing.T) {
	tests := []struct{ event, data, want string }{
		{"message", "one", "event: message\ndata: one\n\n"},
		{"message", "", "event: message\ndata: \n\n"},
		{"message", "a\nb", "event: message\ndata: a\ndata: b\n\n"},
		{"message", "a\r\nb\rc\n", "event: message\ndata: a\ndata: b\ndata: c\ndata: \n\n"},
		{"message", "bad \xff byte", "event: message\ndata: bad \uFFFD byte\n\n"},
	}
	for _, tt := range tests {
		if got := string(sseEvent(tt.event, tt.data)); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.data, got, tt.want)
		}
	}
}

func TestPhoenixPayload(t *testing.T) {
	tests := []struct {
		payload  string
		asString bool
		want     string
	}{
		{`{"a":1}`, false, `{"a":1}`},
		{`42`, false, `42`},
		{`not json`, false, `"not json"`},
		{`{"a":1}`, true, `"{\"a\":1}"`},
		{"\xff", false, "\"\uFFFD\""},
	}
	for _, tt := range tests {
		if got := string(phoenixPayload(tt.payload, tt.asString)); got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.payload, got, tt.want)
		}
	}
}

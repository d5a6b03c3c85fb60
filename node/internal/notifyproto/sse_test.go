package notifyproto

import "testing"

func TestEvent(t *testing.T) {
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

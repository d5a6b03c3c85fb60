package phoenix

import (
	"testing"

	"github.com/notify-dev/notify/node/internal/hub"
)

func TestPayloadJSON(t *testing.T) {
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
		if got := string(payloadJSON(tt.payload, tt.asString)); got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.payload, got, tt.want)
		}
	}
}

func TestIsTopicOf(t *testing.T) {
	tests := []struct {
		topic string
		m     hub.Message
		want  bool
	}{
		{"user:42", hub.Message{Name: "42"}, true},
		{"user:42", hub.Message{Name: "4"}, false},
		{"user:42", hub.Message{Topic: true, Name: "42"}, false},
		{"group:news", hub.Message{Topic: true, Name: "news"}, true},
		{"group:news", hub.Message{Name: "news"}, false},
		{"groupxnews", hub.Message{Topic: true, Name: "news"}, false},
	}
	for _, tt := range tests {
		if got := isTopicOf(tt.topic, &tt.m); got != tt.want {
			t.Errorf("isTopicOf(%q, %+v) = %v", tt.topic, tt.m, got)
		}
		if tt.want && topicOf(&tt.m) != tt.topic {
			t.Errorf("topicOf(%+v) = %q, want %q", tt.m, topicOf(&tt.m), tt.topic)
		}
	}
}

package admission

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestQuery(t *testing.T) {
	tests := []struct {
		method, target, body string
		want                 map[string]string
	}{
		{"GET", "/notify/ws?topic=a&envelope=1", "", map[string]string{"topic": "a", "envelope": "1"}},
		{"GET", "/notify/ws?topic=a&bad=%zz", "", map[string]string{"topic": "a", "bad": ""}},
		// The body's fields stay out, and the body unread.
		{"POST", "/pubsub/longpoll?token=t", "topic=b", map[string]string{"token": "t", "topic": ""}},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		q := Query(r)
		for k, v := range tt.want {
			if got := q.Get(k); got != v {
				t.Errorf("%s %s: %s = %q, want %q", tt.method, tt.target, k, got, v)
			}
		}
		if tt.method == "GET" {
			q.Set("mark", "1") // the second call returns the same parse
			if Query(r).Get("mark") != "1" {
				t.Errorf("%s: the query was parsed again", tt.target)
			}
		} else if r.Form != nil {
			t.Errorf("%s: Form filled (the body read)", tt.target)
		}
	}
}

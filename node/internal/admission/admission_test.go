package admission

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/notify-dev/notify/auth"
)

func TestTopics(t *testing.T) {
	long := strings.Repeat("x", MaxTopicLen+1)
	many := make([]string, MaxTopicsPerConn+1)
	for i := range many {
		many[i] = "t" + strings.Repeat("i", i)
	}
	tests := []struct {
		name      string
		query     string
		grants    []string
		open      bool
		want      []string
		forbidden bool // else: any error is a bad request
		bad       bool
	}{
		{"none", "", nil, false, nil, false, false},
		{"commas, spaces, repeats", "topic=a,b&topic=b+c", []string{"a", "b", "c"}, false, []string{"a", "b", "c"}, false, false},
		{"not granted", "topic=a,secret", []string{"a"}, false, nil, true, false},
		{"open topics", "topic=anything", nil, true, []string{"anything"}, false, false},
		{"too long", "topic=" + long, nil, true, nil, false, true},
		{"too many", "topic=" + strings.Join(many, ","), nil, true, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Pipeline{cfg: Config{OpenTopics: tt.open}}
			r := &http.Request{URL: &url.URL{RawQuery: tt.query}}
			got, err := p.topics(r, auth.Claims{UserID: "u", Topics: tt.grants})
			var fe forbiddenError
			switch {
			case tt.forbidden && !errors.As(err, &fe):
				t.Fatalf("err %v, want a forbidden topic", err)
			case tt.bad && (err == nil || errors.As(err, &fe)):
				t.Fatalf("err %v, want a bad request", err)
			case !tt.forbidden && !tt.bad && (err != nil || !slices.Equal(got, tt.want)):
				t.Fatalf("got %q %v, want %q", got, err, tt.want)
			}
		})
	}
}

func TestOriginAllowed(t *testing.T) {
	p := &Pipeline{}
	for _, o := range []string{"https://app.example.com", "https://*.example.org", "http://localhost:3000"} {
		op, err := parseOriginPattern(o)
		if err != nil {
			t.Fatal(err)
		}
		p.origins = append(p.origins, op)
	}
	tests := []struct {
		origin string
		want   bool
	}{
		{"", true}, // not a browser
		{"https://app.example.com", true},
		{"https://APP.example.com", true},
		{"http://app.example.com", false}, // other scheme
		{"https://evil.example.com", false},
		{"https://a.example.org", true},
		{"https://a.b.example.org", true},
		{"https://example.org", false}, // the wildcard needs a subdomain
		{"https://*.example.org", false},
		{"http://localhost:3000", true},
		{"http://localhost:3001", false},
		{"null", false},
	}
	for _, tt := range tests {
		r := &http.Request{Header: http.Header{}}
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if got := p.OriginAllowed(r); got != tt.want {
			t.Errorf("Origin %q allowed = %v, want %v", tt.origin, got, tt.want)
		}
	}
}

func TestParseOrigin(t *testing.T) {
	for _, bad := range []string{"", "app.example.com", "https://", "https://a.com/path", "https://a.com?x=1"} {
		if ParseOrigin(bad) == nil {
			t.Errorf("ParseOrigin(%q) accepted", bad)
		}
	}
	for _, good := range []string{"https://a.com", "https://a.com/", "https://*.a.com", "http://localhost:8080"} {
		if err := ParseOrigin(good); err != nil {
			t.Errorf("ParseOrigin(%q): %v", good, err)
		}
	}
}

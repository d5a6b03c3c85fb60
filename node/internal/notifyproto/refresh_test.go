package notifyproto

import (
	"strings"
	"testing"
	"time"
)

func TestParseRefresh(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		token   string
		refresh bool
		err     bool
	}{
		{name: "refresh", in: `{"kind":"refresh","token":"a.b.c"}`, token: "a.b.c", refresh: true},
		{name: "fields in any order", in: `{"token":"a.b.c","kind":"refresh","extra":1}`, token: "a.b.c", refresh: true},
		{name: "not JSON", in: `hello`},
		{name: "other kind", in: `{"kind":"other","token":"refresh"}`},
		{name: "refresh as a value elsewhere", in: `{"kind":"ping","note":"refresh"}`},
		{name: "broken JSON", in: `{"kind":"refresh","token":`},
		{name: "no token", in: `{"kind":"refresh"}`, refresh: true, err: true},
		{name: "empty token", in: `{"kind":"refresh","token":""}`, refresh: true, err: true},
		{name: "token not a string", in: `{"kind":"refresh","token":{"a":1}}`, refresh: true, err: true},
		{name: "null token", in: `{"kind":"refresh","token":null}`, refresh: true, err: true},
		{name: "too large", in: `{"kind":"refresh","token":"` + strings.Repeat("a", maxRefreshFrame) + `"}`},
		{name: "array", in: `["refresh"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, refresh, err := parseRefresh([]byte(tt.in))
			if tok != tt.token || refresh != tt.refresh || (err != nil) != tt.err {
				t.Fatalf("parseRefresh = %q, %v, %v", tok, refresh, err)
			}
		})
	}
}

func TestExpJSON(t *testing.T) {
	if got := string(expJSON("refreshed", time.Unix(1764590000, 0))); got != `{"kind":"refreshed","exp":1764590000}` {
		t.Fatal(got)
	}
	if got := string(expJSON("refreshed", time.Time{})); got != `{"kind":"refreshed"}` {
		t.Fatal(got)
	}
	if got := string(errorJSON(`bad "x"`)); got != `{"kind":"error","error":{"message":"bad \"x\""}}` {
		t.Fatal(got)
	}
}

// FuzzParseRefresh: any client frame parses without a panic; a token is
// only ever returned for a refresh frame, and is never empty.
func FuzzParseRefresh(f *testing.F) {
	for _, s := range []string{`{"kind":"refresh","token":"a.b.c"}`, `{"kind":"refresh"}`, `hello`, `{"kind":"refresh","token":"\u0000"}`, `{"kind":"refresh","kind":"x","token":"t"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, refresh, err := parseRefresh(b)
		if !refresh && (tok != "" || err != nil) {
			t.Fatalf("not a refresh, yet %q %v", tok, err)
		}
		if refresh && err == nil && tok == "" {
			t.Fatal("a refresh with an empty token")
		}
	})
}

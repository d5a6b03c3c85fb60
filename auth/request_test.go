package auth

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name       string
		cookieName string
		cookie     string // value of the cookie named "session"; "" = none
		header     string // Authorization header; "" = none
		query      string // authorization query parameter; "" = none
		want       string
		wantSource Source
	}{
		{name: "nothing", cookieName: "session", wantSource: SourceNone},
		{name: "cookie beats header and query", cookieName: "session", cookie: "c.c.c", header: "Bearer h.h.h", query: "q.q.q", want: "c.c.c", wantSource: SourceCookie},
		{name: "header beats query", cookieName: "session", header: "Bearer h.h.h", query: "q.q.q", want: "h.h.h", wantSource: SourceHeader},
		{name: "query alone", cookieName: "session", query: "q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "cookie ignored without cookie name", cookie: "c.c.c", header: "Bearer h.h.h", want: "h.h.h", wantSource: SourceHeader},
		{name: "cookie ignored without cookie name, nothing else", cookie: "c.c.c", wantSource: SourceNone},
		{name: "other cookie name", cookieName: "other", cookie: "c.c.c", query: "q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "basic auth falls through to query", cookieName: "session", header: "Basic dXNlcjpwYXNz", query: "q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "basic auth alone", header: "Basic dXNlcjpwYXNz", wantSource: SourceNone},
		{name: "lower-case bearer", header: "bearer h.h.h", want: "h.h.h", wantSource: SourceHeader},
		{name: "upper-case bearer", header: "BEARER h.h.h", want: "h.h.h", wantSource: SourceHeader},
		{name: "header spaces trimmed", header: "  Bearer \t h.h.h  ", want: "h.h.h", wantSource: SourceHeader},
		{name: "bearer without token falls through", header: "Bearer   ", query: "q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "bare token in header is not bearer", header: "h.h.h", wantSource: SourceNone},
		{name: "bearer prefix glued to token", header: "Bearerh.h.h", wantSource: SourceNone},
		{name: "query bearer prefix stripped", query: "Bearer q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "query lower-case bearer prefix stripped", query: "bearer q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "query spaces trimmed", query: "  q.q.q ", want: "q.q.q", wantSource: SourceQuery},
		{name: "query only the word bearer", query: "Bearer", wantSource: SourceNone},
		{name: "query blank", query: "   ", wantSource: SourceNone},
		{name: "empty cookie falls through", cookieName: "session", cookie: `""`, header: "Bearer h.h.h", want: "h.h.h", wantSource: SourceHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := "/notify/ws"
			if tt.query != "" {
				target += "?" + url.Values{"authorization": {tt.query}}.Encode()
			}
			r := httptest.NewRequest(http.MethodGet, target, nil)
			if tt.cookie != "" {
				r.Header.Set("Cookie", "theme=dark; session="+tt.cookie)
			}
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			got, src := TokenFromRequest(r, tt.cookieName)
			if got != tt.want || src != tt.wantSource {
				t.Fatalf("TokenFromRequest = %q, %v; want %q, %v", got, src, tt.want, tt.wantSource)
			}
		})
	}
}

func TestTokenFromRequestMultipleValues(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/notify/ws?authorization=&authorization=q2", nil)
	r.Header.Add("Cookie", "session=")
	r.Header.Add("Cookie", "session=c2")
	r.Header.Add("Authorization", "Basic abc")
	if got, src := TokenFromRequest(r, "session"); got != "c2" || src != SourceCookie {
		t.Fatalf("cookie: got %q, %v", got, src)
	}
	r.Header.Del("Cookie")
	r.Header.Add("Authorization", "Bearer h2")
	if got, src := TokenFromRequest(r, "session"); got != "h2" || src != SourceHeader {
		t.Fatalf("header: got %q, %v", got, src)
	}
	r.Header.Del("Authorization")
	if got, src := TokenFromRequest(r, "session"); got != "q2" || src != SourceQuery {
		t.Fatalf("query: got %q, %v", got, src)
	}
}

func TestTokenFromRequestNil(t *testing.T) {
	if got, src := TokenFromRequest(nil, "session"); got != "" || src != SourceNone {
		t.Fatalf("nil request: got %q, %v", got, src)
	}
	r := &http.Request{Header: http.Header{"Authorization": {"Bearer x"}}}
	if got, src := TokenFromRequest(r, "session"); got != "x" || src != SourceHeader {
		t.Fatalf("request without URL: got %q, %v", got, src)
	}
}

func TestSourceString(t *testing.T) {
	tests := []struct {
		s    Source
		want string
	}{
		{SourceNone, "none"},
		{SourceCookie, "cookie"},
		{SourceHeader, "header"},
		{SourceQuery, "query"},
		{Source(9), "Source(9)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Source(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

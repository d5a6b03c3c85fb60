package auth

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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
		{name: "raw token in header", header: "h.h.h", want: "h.h.h", wantSource: SourceHeader},
		{name: "raw token in header beats query", header: " h.h.h ", query: "q.q.q", want: "h.h.h", wantSource: SourceHeader},
		{name: "bearer prefix glued to token is a raw token", header: "Bearerh.h.h", want: "Bearerh.h.h", wantSource: SourceHeader},
		{name: "header only the word bearer falls through", header: "Bearer", query: "q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "other scheme with two words falls through", header: "Digest a b", query: "q.q.q", want: "q.q.q", wantSource: SourceQuery},
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

// TestTokenFromRequestLowerCaseHeader: a header sent on the wire as
// "authorization" is the same header (go-bridget/notify read it in any case).
func TestTokenFromRequestLowerCaseHeader(t *testing.T) {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET /notify/ws HTTP/1.1\r\nHost: x\r\nauthorization: h.h.h\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got, src := TokenFromRequest(r, ""); got != "h.h.h" || src != SourceHeader {
		t.Fatalf("got %q, %v", got, src)
	}
}

func TestTokenFromRequestForm(t *testing.T) {
	tests := []struct {
		name, contentType, body, query string
		want                           string
		wantSource                     Source
	}{
		{name: "form field", contentType: "application/x-www-form-urlencoded", body: "authorization=f.f.f", want: "f.f.f", wantSource: SourceForm},
		{name: "form field with bearer", contentType: "application/x-www-form-urlencoded; charset=utf-8", body: "authorization=Bearer+f.f.f", want: "f.f.f", wantSource: SourceForm},
		{name: "query beats form", contentType: "application/x-www-form-urlencoded", body: "authorization=f.f.f", query: "q.q.q", want: "q.q.q", wantSource: SourceQuery},
		{name: "JSON body is not read", contentType: "application/json", body: `{"authorization":"f.f.f"}`, wantSource: SourceNone},
		{name: "form too large", contentType: "application/x-www-form-urlencoded", body: "authorization=" + strings.Repeat("f", maxFormBytes), wantSource: SourceNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := "/notify/ws"
			if tt.query != "" {
				target += "?authorization=" + tt.query
			}
			r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", tt.contentType)
			if got, src := TokenFromRequest(r, ""); got != tt.want || src != tt.wantSource {
				t.Fatalf("got %q, %v; want %q, %v", got, src, tt.want, tt.wantSource)
			}
			if tt.contentType == "application/json" {
				if b, _ := io.ReadAll(r.Body); string(b) != tt.body {
					t.Fatalf("the JSON body was consumed: %q left", b)
				}
			}
		})
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
		{SourceForm, "form"},
		{Source(9), "Source(9)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Source(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

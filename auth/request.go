package auth

import (
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Source says where a token was found.
type Source int

// Token sources, in the order TokenFromRequest looks.
const (
	SourceNone Source = iota
	SourceCookie
	SourceHeader
	SourceQuery
	SourceForm
)

// String returns "none", "cookie", "header" or "query" (a metrics label).
func (s Source) String() string {
	switch s {
	case SourceNone:
		return "none"
	case SourceCookie:
		return "cookie"
	case SourceHeader:
		return "header"
	case SourceQuery:
		return "query"
	case SourceForm:
		return "form"
	}
	return "Source(" + strconv.Itoa(int(s)) + ")"
}

// queryParam is go-bridget/notify's name for the token query parameter
// (and form field).
const queryParam = "authorization"

// TokenFromRequest returns the token, first found wins, as go-bridget/notify
// looked for it: the cookie named cookieName (when cookieName != "" and the
// value is non-empty); then the Authorization header (any case on the wire),
// "Bearer <token>" (scheme case-insensitive) or the raw token; then the
// "authorization" query parameter, then the "authorization" field of a
// urlencoded form body (raw token or "Bearer <token>"). A header with
// another scheme, such as Basic, counts as not found. The token is returned
// without surrounding spaces; "", SourceNone when none is found.
func TokenFromRequest(r *http.Request, cookieName string) (string, Source) {
	if r == nil {
		return "", SourceNone
	}
	if cookieName != "" {
		// A browser may send several cookies of one name (different paths);
		// take the first that carries something.
		for _, c := range r.CookiesNamed(cookieName) {
			if tok := strings.TrimSpace(c.Value); tok != "" {
				return tok, SourceCookie
			}
		}
	}
	for _, h := range r.Header.Values("Authorization") {
		if tok, ok := headerToken(h); ok {
			return tok, SourceHeader
		}
	}
	if r.URL != nil {
		if tok, ok := firstToken(r.URL.Query()[queryParam]); ok {
			return tok, SourceQuery
		}
	}
	if tok, ok := firstToken(formValues(r)); ok {
		return tok, SourceForm
	}
	return "", SourceNone
}

// firstToken is the first of values that holds a token, raw or after
// "Bearer ".
func firstToken(values []string) (string, bool) {
	for _, q := range values {
		tok, ok := bearer(q)
		if !ok {
			tok = strings.TrimSpace(q)
		}
		if tok != "" && !strings.EqualFold(tok, "bearer") {
			return tok, true
		}
	}
	return "", false
}

// maxFormBytes bounds the form body read for a token.
const maxFormBytes = 64 << 10

// formValues returns the authorization fields of a urlencoded form body.
// Only such a body is read (a JSON long-poll body is left alone), at most
// maxFormBytes of it.
func formValues(r *http.Request) []string {
	if r.PostForm == nil {
		if r.Body == nil || r.Body == http.NoBody {
			return nil
		}
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
			return nil
		}
		r.Body = http.MaxBytesReader(nil, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			return nil
		}
	}
	return r.PostForm[queryParam]
}

// headerToken reads an Authorization header: "Bearer <token>", or a raw
// token (one word, as go-bridget/notify accepted). Another scheme ("Basic
// ...") is not a token.
func headerToken(v string) (string, bool) {
	if tok, ok := bearer(v); ok {
		return tok, true
	}
	v = strings.TrimSpace(v)
	if v == "" || strings.ContainsAny(v, " \t") || strings.EqualFold(v, "bearer") {
		return "", false
	}
	return v, true
}

// bearer parses "Bearer <token>" with any case and any spaces or tabs around
// the parts. ok is false for another scheme or an empty token.
func bearer(v string) (string, bool) {
	v = strings.TrimSpace(v)
	i := strings.IndexAny(v, " \t")
	if i < 0 || !strings.EqualFold(v[:i], "bearer") {
		return "", false
	}
	tok := strings.TrimSpace(v[i:])
	return tok, tok != ""
}

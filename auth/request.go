package auth

import (
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
	}
	return "Source(" + strconv.Itoa(int(s)) + ")"
}

// queryParam is go-bridget/notify's name for the token query parameter.
const queryParam = "authorization"

// TokenFromRequest returns the token, first found wins: the cookie named
// cookieName (when cookieName != "" and the value is non-empty); then an
// "Authorization: Bearer <jwt>" header (scheme case-insensitive); then the
// "authorization" query parameter (raw token or "Bearer <jwt>"). A header
// with another scheme, such as Basic, counts as not found. The token is
// returned without surrounding spaces; "", SourceNone when none is found.
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
		if tok, ok := bearer(h); ok {
			return tok, SourceHeader
		}
	}
	if r.URL != nil {
		for _, q := range r.URL.Query()[queryParam] {
			tok, ok := bearer(q)
			if !ok {
				tok = strings.TrimSpace(q)
			}
			if tok != "" && !strings.EqualFold(tok, "bearer") {
				return tok, SourceQuery
			}
		}
	}
	return "", SourceNone
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

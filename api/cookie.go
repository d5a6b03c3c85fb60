package api

import (
	"context"
	"net/http"
	"strings"
)

// cookieKey carries the session cookie of a Twirp request to Auth.
type cookieKey struct{}

// withSessionCookie puts the first non-empty cookie named name of r into
// ctx, for Auth to read.
func withSessionCookie(ctx context.Context, r *http.Request, name string) context.Context {
	for _, c := range r.CookiesNamed(name) {
		if v := strings.TrimSpace(c.Value); v != "" {
			return context.WithValue(ctx, cookieKey{}, v)
		}
	}
	return ctx
}

// sessionCookie is the session cookie's value when the request carried one.
func sessionCookie(ctx context.Context) (string, bool) {
	v, ok := ctx.Value(cookieKey{}).(string)
	return v, ok
}

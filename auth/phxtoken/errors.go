package phxtoken

import "github.com/notify-dev/notify/auth"

// tokenError is a verification failure whose message is fixed text, safe
// to show a client. auth builds its own with an unexported constructor, so
// this one mirrors it: it matches auth.ErrInvalidToken and its category.
type tokenError struct {
	kind error // one of auth's categories, such as auth.ErrExpired
	msg  string
}

func (e *tokenError) Error() string { return e.msg }

// Is makes every failure match auth.ErrInvalidToken and its category, so a
// caller maps Phoenix and JWT failures alike.
func (e *tokenError) Is(target error) bool {
	return target == auth.ErrInvalidToken || target == e.kind
}

func invalid(kind error, msg string) error { return &tokenError{kind: kind, msg: msg} }

// malformed wraps a decoder error; those are fixed text too.
func malformed(reason string) error {
	return invalid(auth.ErrMalformed, "phoenix token malformed: "+reason)
}

// The failures with no detail, made once: Verify does not allocate them.
var (
	errTooLarge    = invalid(auth.ErrMalformed, "phoenix token too large")
	errParts       = malformed("not three dot-separated parts")
	errHeader      = malformed("header is not HS256")
	errBase64      = malformed("bad base64")
	errSignature   = invalid(auth.ErrSignature, "phoenix token signature invalid")
	errExpired     = invalid(auth.ErrExpired, "phoenix token expired")
	errFuture      = invalid(auth.ErrNotValidYet, "phoenix token signed in the future")
	errNotMessage  = malformed("payload is not a {data, signed_at, max_age} tuple")
	errSignedAt    = malformed("signed_at is not an integer")
	errMaxAge      = malformed("max_age is not a number or :infinity")
	errDataType    = invalid(auth.ErrUserClaim, "phoenix token data must be a string, an integer or a map with user_id or id")
	errNoID        = invalid(auth.ErrUserClaim, "phoenix token data map has no user_id or id")
	errAmbiguousID = invalid(auth.ErrUserClaim, "phoenix token data map has user_id or id twice")
	errIDType      = invalid(auth.ErrUserClaim, "phoenix token user id must be a string or an integer")
	errIDEmpty     = invalid(auth.ErrUserClaim, "phoenix token user id missing or empty")
	errIDTooLong   = invalid(auth.ErrUserClaim, "phoenix token user id longer than 512 bytes")
	errIDNotUTF8   = invalid(auth.ErrUserClaim, "phoenix token user id is not UTF-8")
)

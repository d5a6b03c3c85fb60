package auth

import "errors"

// ErrNoToken means the request carried no token at all.
var ErrNoToken = errors.New("no token")

// ErrInvalidToken matches every verification failure other than ErrNoToken,
// so callers can map them all to 401 with a single errors.Is.
var ErrInvalidToken = errors.New("token invalid")

// Finer-grained verification failures. Each also matches ErrInvalidToken.
// Errors returned by Verify may carry a more specific message (for example
// naming the algorithm) but match one of these with errors.Is.
var (
	ErrMalformed   error = newKind("token malformed")
	ErrAlgorithm   error = newKind("token algorithm not allowed")
	ErrSignature   error = newKind("token signature invalid")
	ErrExpired     error = newKind("token expired")
	ErrNotValidYet error = newKind("token not valid yet")
	ErrAudience    error = newKind("token audience not accepted")
	ErrIssuer      error = newKind("token issuer not accepted")
	ErrUserClaim   error = newKind("user claim missing or empty")
	ErrTopicsClaim error = newKind(`"topics" claim must be an array of strings`)
)

// tokenError is a verification failure whose message is safe to show a
// client: it never includes token text, only fixed wording and names taken
// from the configuration or a fixed list.
type tokenError struct {
	kind error // category sentinel; nil for the sentinels themselves
	msg  string
}

func newKind(msg string) *tokenError { return &tokenError{msg: msg} }

func (e *tokenError) Error() string { return e.msg }

// Is makes every tokenError match ErrInvalidToken and its category.
func (e *tokenError) Is(target error) bool {
	return target == ErrInvalidToken || (e.kind != nil && target == e.kind)
}

// invalid returns an error of category kind with a specific message.
func invalid(kind error, msg string) error {
	return &tokenError{kind: kind, msg: msg}
}

// Package phxtoken verifies Phoenix.Token tokens, the ones Elixir's
// Phoenix.Token.sign(secret_key_base, salt, data) makes, so clients of the
// Elixir notifications service keep their tokens.
//
// A token is Plug.Crypto.MessageVerifier's HS256 form (plug_crypto 2.x,
// lib/plug/crypto/message_verifier.ex):
//
//	SFMyNTY.<payload>.<signature>
//
// "SFMyNTY" is base64url("HS256"), both other parts are base64url without
// padding, and the signature is HMAC-SHA256 over "SFMyNTY.<payload>" (the
// encoded text, not the decoded bytes). The key is PBKDF2-HMAC-SHA256 of the
// secret key base and the salt, 1000 iterations, 32 bytes: Plug.Crypto's
// get_secret/3 defaults, which Phoenix.Token passes on. The payload is
// :erlang.term_to_binary({data, signed_at_ms, max_age_secs}).
//
// Checked against plug_crypto 2.1.1 (lib/plug/crypto.ex, crypto/
// key_generator.ex, crypto/message_verifier.ex) and Phoenix 1.9's
// lib/phoenix/token.ex, and against tokens Erlang made (testdata).
package phxtoken

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

const (
	// DefaultSalt is the salt the Elixir service signs with (its
	// PubSubToken's @namespace).
	DefaultSalt = "pubsub"
	// DefaultMaxAge is Phoenix.Token's default max_age, 86400 seconds.
	DefaultMaxAge = 86400 * time.Second

	// protected is base64url("HS256"), the header Plug.Crypto.sign writes:
	// it always signs with MessageVerifier's default digest, SHA-256.
	protected = "SFMyNTY"
	prefix    = protected + "."

	// maxTokenLen bounds the work one token can cause.
	maxTokenLen = 64 << 10
	// minSecretKeyBase is Phoenix.Token's own guard on a string key base
	// (lib/phoenix/token.ex get_key_base/1: byte_size >= 20).
	minSecretKeyBase = 20
	// futureSkew is how far in the future a token may claim to be signed.
	// Plug.Crypto refuses any token from its future, but here the signer
	// is another machine whose clock may run a little ahead.
	futureSkew = 5 * time.Second

	keyIterations = 1000
	keyLength     = 32
)

// Config holds the settings. Zero Salt and MaxAge take the defaults.
type Config struct {
	// SecretKeyBase is the Phoenix endpoint's secret_key_base, as text.
	SecretKeyBase string
	// Salt is the salt given to Phoenix.Token.sign; DefaultSalt if empty.
	Salt string
	// MaxAge is the longest a token is accepted after it was signed;
	// DefaultMaxAge if zero. It replaces the max_age inside the token, as
	// Phoenix.Token.verify's :max_age option does.
	MaxAge time.Duration
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.SecretKeyBase == "":
		errs = append(errs, errors.New("phoenix token secret key base must not be empty"))
	case len(c.SecretKeyBase) < minSecretKeyBase:
		errs = append(errs, fmt.Errorf("phoenix token secret key base must be at least %d bytes", minSecretKeyBase))
	}
	// Phoenix counts max_age in seconds; less than one cannot be meant.
	if c.MaxAge != 0 && c.MaxAge < time.Second {
		errs = append(errs, errors.New("phoenix token max age must be at least 1s"))
	}
	return errors.Join(errs...)
}

// Claims is what a valid token says.
type Claims struct {
	UserID    string
	SignedAt  time.Time
	ExpiresAt time.Time
}

// Verifier checks tokens against one secret key base and salt.
type Verifier struct {
	key      []byte
	maxAgeMs int64
	now      func() time.Time // replaced in tests
}

// New validates cfg and derives the key, once: PBKDF2 is deliberately slow.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Salt == "" {
		cfg.Salt = DefaultSalt
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	key, err := pbkdf2.Key(sha256.New, cfg.SecretKeyBase, []byte(cfg.Salt), keyIterations, keyLength)
	if err != nil {
		return nil, fmt.Errorf("phoenix token key: %w", err)
	}
	return &Verifier{key: key, maxAgeMs: cfg.MaxAge.Milliseconds(), now: time.Now}, nil
}

// Looks reports whether token has the Phoenix.Token form, so a caller can
// choose this verifier rather than a JWT one (whose tokens start "eyJ").
func Looks(token string) bool { return strings.HasPrefix(token, prefix) }

// Verify checks the signature and age of token and returns its user id.
// Every error matches auth.ErrInvalidToken and one of auth's categories.
func (v *Verifier) Verify(token string) (Claims, error) {
	payload, err := v.open(token)
	if err != nil {
		return Claims{}, err
	}
	data, signedMs, err := decodeMessage(payload)
	if err != nil {
		return Claims{}, err
	}
	// As Plug.Crypto's validate_age/2: expired once signed + max_age is
	// before now, to the millisecond.
	now := v.now().UnixMilli()
	if signedMs > now+futureSkew.Milliseconds() {
		return Claims{}, errFuture
	}
	if signedMs+v.maxAgeMs < now {
		return Claims{}, errExpired
	}
	id, err := userID(data)
	if err != nil {
		return Claims{}, err
	}
	return Claims{
		UserID:    id,
		SignedAt:  time.UnixMilli(signedMs),
		ExpiresAt: time.UnixMilli(signedMs + v.maxAgeMs),
	}, nil
}

// open checks the form and the signature and returns the decoded payload,
// as MessageVerifier's hmac_sha2_verify/2.
func (v *Verifier) open(token string) ([]byte, error) {
	if len(token) > maxTokenLen {
		return nil, errTooLarge
	}
	header, rest, ok := strings.Cut(token, ".")
	encPayload, encSig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(encSig, ".") {
		return nil, errParts
	}
	if header != protected {
		return nil, errHeader
	}
	payload, err := decodeBase64(encPayload)
	if err != nil {
		return nil, err
	}
	sig, err := decodeBase64(encSig)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, v.key)
	mac.Write([]byte(token[:len(prefix)+len(encPayload)]))
	if !hmac.Equal(mac.Sum(nil), sig) {
		return nil, errSignature
	}
	return payload, nil
}

// decodeBase64 decodes unpadded base64url strictly: Go's decoder skips
// newlines and tolerates stray low bits, and a signature must have one
// spelling only.
func decodeBase64(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return nil, errBase64
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, errBase64
	}
	return b, nil
}

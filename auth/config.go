// Package auth verifies the JWTs that clients present to the WebSocket
// endpoint and signs the HS256 tokens printed by `notify token`.
package auth

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/notify-dev/notify/internal/flagext"
)

// DefaultUserClaim is the claim holding the user id unless configured otherwise.
const DefaultUserClaim = "user_id"

// reservedClaims cannot hold the user id: Sign and Verify give them other
// meanings.
var reservedClaims = []string{"exp", "nbf", "iat", "aud", "iss", topicsClaim}

// Config holds the token settings.
type Config struct {
	// Secret is the HMAC secret for HS256/HS384/HS512 tokens.
	Secret string
	// PublicKeyFiles are PEM files with RSA, ECDSA or Ed25519 public keys.
	PublicKeyFiles flagext.StringSlice
	// Audience, when set, must be listed in the token's "aud".
	Audience string
	// Issuer, when set, must equal the token's "iss".
	Issuer string
	// UserClaim names the claim holding the user id.
	UserClaim string
	// SessionCookie names the cookie that carries the token; empty disables it.
	SessionCookie string
}

// RegisterFlags registers the settings on fs. The environment variables are
// the upper-cased flag names with - replaced by _, bound elsewhere.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Secret, "notify-jwt-secret", "", "HMAC secret for HS256/HS384/HS512 tokens (random per process when no key is configured)")
	fs.Var(&c.PublicKeyFiles, "notify-jwt-public-keys", "comma-separated PEM files with public keys: RSA (RS*, PS*), ECDSA (ES*), Ed25519 (EdDSA)")
	fs.StringVar(&c.Audience, "notify-jwt-audience", "", `required "aud" claim value when set`)
	fs.StringVar(&c.Issuer, "notify-jwt-issuer", "", `required "iss" claim value when set`)
	fs.StringVar(&c.UserClaim, "notify-user-claim", DefaultUserClaim, "claim holding the user id (string or number)")
	fs.StringVar(&c.SessionCookie, "notify-session-cookie", "", "cookie that carries the token")
}

// Validate reports settings that cannot work. It does not require a secret
// or key: the caller generates a random secret when neither is set.
func (c *Config) Validate() error {
	var errs []error
	switch {
	case strings.TrimSpace(c.UserClaim) == "":
		errs = append(errs, errors.New("NOTIFY_USER_CLAIM must not be empty"))
	case slices.Contains(reservedClaims, c.UserClaim):
		// Sign would overwrite it, and a time or audience is no user id.
		errs = append(errs, fmt.Errorf("NOTIFY_USER_CLAIM must not be %q, a claim with another meaning", c.UserClaim))
	}
	// A name net/http cannot match would silently disable cookie auth.
	if c.SessionCookie != "" && !isCookieName(c.SessionCookie) {
		errs = append(errs, errors.New("NOTIFY_SESSION_COOKIE is not a valid cookie name"))
	}
	for _, f := range c.PublicKeyFiles {
		if strings.TrimSpace(f) == "" {
			errs = append(errs, errors.New("NOTIFY_JWT_PUBLIC_KEYS has an empty file name"))
			break
		}
	}
	return errors.Join(errs...)
}

// userClaim returns the configured user claim, defaulting for Configs built
// as literals rather than through RegisterFlags.
func (c *Config) userClaim() string {
	if c.UserClaim == "" {
		return DefaultUserClaim
	}
	return c.UserClaim
}

// isCookieName reports whether name is an RFC 7230 token, which is what
// net/http accepts as a cookie name.
func isCookieName(name string) bool {
	for i := 0; i < len(name); i++ {
		b := name[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return name != ""
}

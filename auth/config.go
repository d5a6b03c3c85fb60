// Package auth verifies the JWTs that clients present to the WebSocket
// endpoint and signs the HS256 tokens printed by `notify token`.
package auth

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/notify-dev/notify/internal/flagext"
)

// DefaultUserClaim is the claim holding the user id unless configured otherwise.
const DefaultUserClaim = "user_id"

// DefaultJWKSRefresh is how often the JWKS documents are fetched again
// unless configured otherwise.
const DefaultJWKSRefresh = 5 * time.Minute

// reservedClaims cannot hold the user id: Sign and Verify give them other
// meanings.
var reservedClaims = []string{"exp", "nbf", "iat", "aud", "iss", topicsClaim}

// Config holds the token settings.
type Config struct {
	// Secret is the HMAC secret for HS256/HS384/HS512 tokens.
	Secret string
	// PublicKeyFiles are PEM files with RSA, ECDSA or Ed25519 public keys.
	PublicKeyFiles flagext.StringSlice
	// JWKSURLs are JWK Set documents (RFC 7517) whose RSA, EC and OKP keys
	// verify tokens alongside PublicKeyFiles.
	JWKSURLs flagext.StringSlice
	// JWKSRefresh is how often JWKSURLs are fetched again.
	JWKSRefresh time.Duration
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
	fs.Var(&c.JWKSURLs, "notify-jwks-url", "comma-separated http(s) URLs of JWK Sets whose RSA, EC and Ed25519 keys verify tokens")
	fs.DurationVar(&c.JWKSRefresh, "notify-jwks-refresh", DefaultJWKSRefresh, "how often the JWK Sets are fetched again (also, at most every 10s, when a token names an unknown kid)")
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
	errs = append(errs, c.validateJWKS()...)
	return errors.Join(errs...)
}

// validateJWKS checks the URLs now, so a typo fails at start rather than
// as a refresh error that leaves every token refused.
func (c *Config) validateJWKS() []error {
	var errs []error
	for _, raw := range c.JWKSURLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL is not quoted: it may carry credentials.
			errs = append(errs, errors.New("NOTIFY_JWKS_URL must list absolute http or https URLs"))
			break
		}
	}
	if c.JWKSRefresh <= 0 {
		errs = append(errs, errors.New("NOTIFY_JWKS_REFRESH must be positive"))
	}
	return errs
}

// jwksRefresh returns the configured refresh interval, defaulting for
// Configs built as literals rather than through RegisterFlags.
func (c *Config) jwksRefresh() time.Duration {
	if c.JWKSRefresh <= 0 {
		return DefaultJWKSRefresh
	}
	return c.JWKSRefresh
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

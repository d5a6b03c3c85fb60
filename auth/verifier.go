package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/notify-dev/notify/internal/service"
)

const (
	// maxTokenLen bounds the work done on a token before its signature is
	// known to be good. Cookies and headers are far smaller in practice.
	maxTokenLen = 64 << 10
	// maxUserIDLen keeps ids usable as Redis channel and key names.
	maxUserIDLen = 512
	// maxNumericDate (9999-12-31T23:59:59Z) bounds exp and nbf: beyond it
	// the float-to-time conversion in jwt is meaningless.
	maxNumericDate = 253402300799
	// topicsClaim is the optional claim listing joinable topics.
	topicsClaim = "topics"
)

// Claims is what a verified token says about its bearer.
type Claims struct {
	UserID string
	// Topics lists the topics the token may join; nil when it lists none.
	Topics []string
	// ExpiresAt is zero when the token has no exp.
	ExpiresAt time.Time
}

// Allows reports whether the token grants topic (listed in Topics).
func (c Claims) Allows(topic string) bool {
	return topic != "" && slices.Contains(c.Topics, topic)
}

// Verifier checks tokens against the configured secret, public keys and
// JWK Sets.
// It is safe for concurrent use.
type Verifier struct {
	parser    *jwt.Parser
	validator *jwt.Validator // the parser's checks of exp and nbf, for short
	short     *hmacPath      // nil without a secret
	allowed   map[string]bool
	secret    []byte // nil when no secret is configured
	keys      *publicKeys
	jwks      *jwksSet // nil without NOTIFY_JWKS_URL
	userClaim string
	audience  string
	issuer    string
	now       func() time.Time // replaced in tests
}

// NewVerifier loads the public key files and fixes the algorithm allowlist
// from what is configured. With NOTIFY_JWKS_URL, keys come also from
// Service, which the caller must run; until it has fetched a document,
// tokens that need its keys are refused.
func NewVerifier(cfg Config, opts ...Option) (*Verifier, error) {
	keys, err := loadPublicKeys(cfg.PublicKeyFiles)
	if err != nil {
		return nil, fmt.Errorf("load JWT keys: %w", err)
	}
	if cfg.Secret == "" && keys.empty() && len(cfg.JWKSURLs) == 0 {
		return nil, errors.New("load JWT keys: none of NOTIFY_JWT_SECRET, NOTIFY_JWT_PUBLIC_KEYS and NOTIFY_JWKS_URL is set")
	}
	jwks, err := newJWKSSet(cfg, newOptions(opts))
	if err != nil {
		return nil, err
	}

	v := &Verifier{
		keys:      keys,
		jwks:      jwks,
		userClaim: cfg.userClaim(),
		audience:  cfg.Audience,
		issuer:    cfg.Issuer,
		now:       time.Now,
	}
	if cfg.Secret != "" {
		v.secret = []byte(cfg.Secret)
	}
	methods := allowedMethods(cfg.Secret != "", keys, jwks != nil)
	v.allowed = make(map[string]bool, len(methods))
	for _, m := range methods {
		v.allowed[m] = true
	}

	// Zero leeway is the jwt default; exp stays optional. aud and iss are
	// checked in claims() to give precise errors.
	now := jwt.WithTimeFunc(func() time.Time { return v.now() })
	v.parser = jwt.NewParser(jwt.WithValidMethods(methods), jwt.WithJSONNumber(), now)
	v.validator = jwt.NewValidator(now)
	v.short = newHMACPath(v.secret, v.allowed)
	return v, nil
}

// allowedMethods lists the algorithms some configured key may verify. With
// JWK Sets every asymmetric one is allowed: which keys they will hold is
// not known yet, and keyFunc still matches each token to its key's family.
func allowedMethods(secret bool, keys *publicKeys, jwks bool) []string {
	var methods []string
	if secret {
		methods = append(methods, "HS256", "HS384", "HS512")
	}
	if jwks || len(keys.rsa) > 0 {
		methods = append(methods, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
	}
	for _, bits := range []int{256, 384, 521} {
		if jwks || len(keys.ecdsa[bits]) > 0 {
			methods = append(methods, ecdsaAlgs[bits])
		}
	}
	if jwks || len(keys.ed) > 0 {
		methods = append(methods, "EdDSA")
	}
	return methods
}

// Service is the verifier's long-running part: it fetches the JWK Sets at
// start and keeps them fresh until ctx ends. Without NOTIFY_JWKS_URL it
// only waits for ctx, so a caller may run it unconditionally.
func (v *Verifier) Service() service.Service {
	if v.jwks == nil {
		return service.Func(func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		})
	}
	return v.jwks
}

// Verify checks token and returns its claims. Every error matches ErrNoToken
// or ErrInvalidToken, and its message never contains token text.
func (v *Verifier) Verify(token string) (Claims, error) {
	if strings.TrimSpace(token) == "" {
		return Claims{}, ErrNoToken
	}
	if len(token) > maxTokenLen {
		return Claims{}, invalid(ErrMalformed, "token too large")
	}
	if c, ok := v.short.verify(token, v.checkShort); ok {
		return c, nil
	}
	return v.verifyFull(token)
}

// verifyFull is Verify's full parse, by golang-jwt.
func (v *Verifier) verifyFull(token string) (Claims, error) {
	mc := jwt.MapClaims{}
	tok, err := v.parser.ParseWithClaims(token, mc, v.keyFunc)
	if err != nil {
		return Claims{}, v.parseError(tok, err)
	}
	// RFC 7515 requires refusing tokens with critical extensions we do not
	// implement (none are).
	if _, ok := tok.Header["crit"]; ok {
		return Claims{}, invalid(ErrMalformed, "token critical header not supported")
	}
	return v.claims(mc)
}

// checkShort checks the claims of a token on the short path as the full
// parse checks them once the signature is good (the header the short path
// takes has no crit).
func (v *Verifier) checkShort(mc jwt.MapClaims) (Claims, error) {
	if err := v.validator.Validate(mc); err != nil {
		return Claims{}, err
	}
	return v.claims(mc)
}

// keyFunc returns only keys of the family the token's method belongs to, so
// a public key can never be used as an HMAC secret.
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if !v.allowed[alg] {
		// Unreachable with WithValidMethods; kept so the key choice never
		// depends on a parser option alone.
		return nil, algorithmError(alg)
	}
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		return v.secret, nil
	}
	if v.jwks != nil {
		return v.jwksKey(t)
	}
	return v.pemKey(t.Method)
}

// parseError maps jwt's errors, whose text may quote decoded token content,
// to our fixed messages.
func (v *Verifier) parseError(tok *jwt.Token, err error) error {
	if tok == nil || errors.Is(err, jwt.ErrTokenMalformed) {
		return ErrMalformed
	}
	// jwt reports a method outside the allowlist as a bad signature; tell
	// the two apart from the header.
	if alg, _ := tok.Header["alg"].(string); !v.allowed[alg] {
		return algorithmError(alg)
	}
	var te *tokenError
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ErrSignature
	case errors.As(err, &te):
		return te
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return ErrNotValidYet
	case errors.Is(err, jwt.ErrInvalidType):
		return invalid(ErrMalformed, "token time claims malformed")
	}
	return ErrInvalidToken
}

// algorithmError names the algorithm only when it is a registered one, so
// arbitrary header text never reaches a client or a log line.
func algorithmError(alg string) error {
	switch {
	case alg == "":
		return invalid(ErrAlgorithm, "token algorithm missing")
	case jwt.GetSigningMethod(alg) != nil:
		return invalid(ErrAlgorithm, fmt.Sprintf("algorithm %q not allowed", alg))
	}
	return invalid(ErrAlgorithm, "token algorithm not supported")
}

// claims checks what jwt does not and extracts our claims.
func (v *Verifier) claims(mc jwt.MapClaims) (Claims, error) {
	for _, name := range []string{"exp", "nbf"} {
		if err := checkNumericDate(mc, name); err != nil {
			return Claims{}, err
		}
	}
	if v.audience != "" {
		aud, err := mc.GetAudience()
		if err != nil || !slices.Contains(aud, v.audience) {
			return Claims{}, ErrAudience
		}
	}
	if v.issuer != "" {
		iss, err := mc.GetIssuer()
		if err != nil || iss != v.issuer {
			return Claims{}, ErrIssuer
		}
	}

	userID, err := v.userID(mc)
	if err != nil {
		return Claims{}, err
	}
	topics, err := topics(mc)
	if err != nil {
		return Claims{}, err
	}
	c := Claims{UserID: userID, Topics: topics}
	if exp, err := mc.GetExpirationTime(); err == nil && exp != nil {
		c.ExpiresAt = exp.Time
	}
	return c, nil
}

// checkNumericDate refuses exp/nbf values outside years 0–9999 (or not
// finite), which jwt would turn into arbitrary times.
func checkNumericDate(mc jwt.MapClaims, name string) error {
	raw, ok := mc[name]
	if !ok {
		return nil
	}
	n, ok := raw.(json.Number)
	if !ok {
		return invalid(ErrMalformed, "token time claims malformed")
	}
	f, err := n.Float64()
	if err != nil || f < -maxNumericDate || f > maxNumericDate {
		return invalid(ErrMalformed, "token time claims malformed")
	}
	return nil
}

// userID reads the user claim: a non-blank string, or a JSON number written
// as its exact decimal string.
func (v *Verifier) userID(mc jwt.MapClaims) (string, error) {
	var id string
	switch raw := mc[v.userClaim].(type) {
	case nil:
		// Missing, or JSON null.
	case string:
		id = raw
	case json.Number:
		s, ok := decimalString(string(raw), maxUserIDLen)
		if !ok {
			return "", invalid(ErrUserClaim, fmt.Sprintf("user claim %q not a valid number or longer than %d bytes", v.userClaim, maxUserIDLen))
		}
		id = s
	default:
		return "", invalid(ErrUserClaim, fmt.Sprintf("user claim %q must be a string or number", v.userClaim))
	}
	if strings.TrimSpace(id) == "" {
		return "", invalid(ErrUserClaim, fmt.Sprintf("user claim %q missing or empty", v.userClaim))
	}
	if len(id) > maxUserIDLen {
		return "", invalid(ErrUserClaim, fmt.Sprintf("user claim %q longer than %d bytes", v.userClaim, maxUserIDLen))
	}
	return id, nil
}

// topics reads the optional topics claim. null counts as absent because Go
// and other encoders write an empty list that way.
func topics(mc jwt.MapClaims) ([]string, error) {
	raw := mc[topicsClaim]
	if raw == nil {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, ErrTopicsClaim
	}
	var out []string
	for _, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, ErrTopicsClaim
		}
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// decimalString writes a JSON number in plain decimal without going through
// float64, so large integer ids survive exactly: 1e3 -> "1000",
// 12345678901234567890 stays as is, 1.50 -> "1.5". It reports false for
// input that is not a JSON number or whose result exceeds max bytes (checked
// before building it, so 1e999999999 costs nothing).
func decimalString(num string, max int) (string, bool) {
	d, ok := parseDecimal(num)
	if !ok {
		return "", false
	}
	if d.digits == "" {
		return "0", true
	}
	return d.format(max)
}

// decimal is a JSON number taken apart: its value is
// (-)0.<digits> * 10^point, digits without leading or trailing zeros, and
// empty for zero (whatever the sign and exponent).
type decimal struct {
	neg    bool
	digits string
	point  int64
}

// parseDecimal validates num as a JSON number and takes it apart. A zero
// mantissa is zero before the exponent is read, so 0e99999999999999 is
// valid; a non-zero one with an exponent outside int32 is not.
func parseDecimal(num string) (decimal, bool) {
	neg := strings.HasPrefix(num, "-")
	if neg {
		num = num[1:]
	}
	mant, expPart, hasExp := num, "", false
	if i := strings.IndexAny(num, "eE"); i >= 0 {
		mant, expPart, hasExp = num[:i], num[i+1:], true
	}
	intPart, frac, hasPoint := strings.Cut(mant, ".")
	if !allDigits(intPart) || !allDigits(frac) || intPart == "" || (hasPoint && frac == "") {
		return decimal{}, false
	}
	if hasExp && !exponentSyntax(expPart) {
		return decimal{}, false
	}
	all := intPart + frac
	digits := strings.TrimLeft(all, "0")
	if digits == "" {
		return decimal{}, true
	}
	leadingZeros := len(all) - len(digits)

	var exp int64
	if hasExp {
		e, err := strconv.ParseInt(expPart, 10, 32)
		if err != nil {
			// Out of int32 with a non-zero mantissa: far too long anyway.
			return decimal{}, false
		}
		exp = e
	}
	return decimal{
		neg:    neg,
		digits: strings.TrimRight(digits, "0"),
		point:  int64(len(intPart)) + exp - int64(leadingZeros),
	}, true
}

// exponentSyntax reports whether s, the text after e or E, is an optional
// sign followed by one or more digits.
func exponentSyntax(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	return s != "" && allDigits(s)
}

// size is the length of d written in plain decimal.
func (d decimal) size() int64 {
	n := int64(len(d.digits))
	var size int64
	switch {
	case d.point <= 0:
		size = 2 - d.point + n // "0." + zeros + digits
	case d.point >= n:
		size = d.point // digits + zeros
	default:
		size = n + 1 // digits with a point inside
	}
	if d.neg {
		size++
	}
	return size
}

// format writes a non-zero d in plain decimal, or reports false without
// building anything when that would take more than max bytes.
func (d decimal) format(max int) (string, bool) {
	size := d.size()
	if size > int64(max) {
		return "", false
	}
	n := int64(len(d.digits))
	var b strings.Builder
	b.Grow(int(size))
	if d.neg {
		b.WriteByte('-')
	}
	switch {
	case d.point <= 0:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", int(-d.point)))
		b.WriteString(d.digits)
	case d.point >= n:
		b.WriteString(d.digits)
		b.WriteString(strings.Repeat("0", int(d.point-n)))
	default:
		b.WriteString(d.digits[:d.point])
		b.WriteByte('.')
		b.WriteString(d.digits[d.point:])
	}
	return b.String(), true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// jwk is one verification key from a JWK Set.
type jwk struct {
	kid string
	// alg, when set, is the one JWS algorithm the key may verify (RFC 7517
	// section 4.4): a key published for RS256 must not verify PS256.
	alg string
	key crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// verifies reports whether k may check a signature made with m.
func (k jwk) verifies(m jwt.SigningMethod) bool {
	return (k.alg == "" || k.alg == m.Alg()) && keyFits(k.key, m)
}

// keyFits reports whether key belongs to m's family (and curve), so a key
// of one family never reaches a method of another.
func keyFits(key any, m jwt.SigningMethod) bool {
	switch m := m.(type) {
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		_, ok := key.(*rsa.PublicKey)
		return ok
	case *jwt.SigningMethodECDSA:
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve.Params().BitSize == m.CurveBits
	case *jwt.SigningMethodEd25519:
		_, ok := key.(ed25519.PublicKey)
		return ok
	}
	return false
}

// rawJWK holds the members of a JWK we read; the rest are ignored.
type rawJWK struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Alg    string   `json:"alg"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	D      string   `json:"d"`
}

// errNotForSigning marks keys published for another use (encryption): they
// are skipped quietly, being no mistake of the publisher.
var errNotForSigning = errors.New("key not published for signatures")

// parseJWK turns r into a verification key, or says why it cannot be one.
func parseJWK(r rawJWK) (jwk, error) {
	if (r.Use != "" && r.Use != "sig") || (r.KeyOps != nil && !slices.Contains(r.KeyOps, "verify")) {
		return jwk{}, errNotForSigning
	}
	if r.D != "" {
		// As with PEM files: a signing key has no business here, and a
		// set that leaks one should be fixed, not used.
		return jwk{}, errors.New("private key material published; refused")
	}
	var key crypto.PublicKey
	var err error
	switch r.Kty {
	case "RSA":
		key, err = parseRSAJWK(r)
	case "EC":
		key, err = parseECJWK(r)
	case "OKP":
		key, err = parseOKPJWK(r)
	case "oct":
		return jwk{}, errors.New("symmetric (oct) keys are not taken from a JWK Set; use NOTIFY_JWT_SECRET")
	default:
		return jwk{}, fmt.Errorf("unsupported kty %q", r.Kty)
	}
	if err == nil {
		err = checkPublicKey(key)
	}
	if err != nil {
		return jwk{}, err
	}
	alg := r.Alg
	if alg == "Ed25519" {
		// RFC 9864's name for what jwt (and most issuers) call EdDSA.
		alg = "EdDSA"
	}
	if m := jwt.GetSigningMethod(alg); alg != "" && (m == nil || !keyFits(key, m)) {
		return jwk{}, fmt.Errorf("alg %q does not fit the %s key", alg, r.Kty)
	}
	return jwk{kid: r.Kid, alg: alg, key: key}, nil
}

func parseRSAJWK(r rawJWK) (*rsa.PublicKey, error) {
	n, err := b64uint(r.N, "n")
	if err != nil {
		return nil, err
	}
	e, err := b64uint(r.E, "e")
	if err != nil {
		return nil, err
	}
	// crypto/rsa takes e as an int; anything but a small odd exponent is
	// a broken key.
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, errors.New("RSA exponent out of range")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func parseECJWK(r rawJWK) (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch r.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported EC curve %q", r.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	x, err := b64bytes(r.X, "x")
	if err != nil {
		return nil, err
	}
	y, err := b64bytes(r.Y, "y")
	if err != nil {
		return nil, err
	}
	// RFC 7518 section 6.2.1.2: coordinates have the curve's full length.
	if len(x) != size || len(y) != size {
		return nil, fmt.Errorf("EC coordinates must be %d bytes for %s", size, r.Crv)
	}
	// ParseUncompressedPublicKey also refuses points off the curve.
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, slices.Concat([]byte{4}, x, y))
	if err != nil {
		return nil, fmt.Errorf("EC point: %w", err)
	}
	return pub, nil
}

func parseOKPJWK(r rawJWK) (ed25519.PublicKey, error) {
	if r.Crv != "Ed25519" {
		return nil, fmt.Errorf("unsupported OKP curve %q", r.Crv)
	}
	x, err := b64bytes(r.X, "x")
	if err != nil {
		return nil, err
	}
	if len(x) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("Ed25519 x must be %d bytes", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(x), nil
}

// b64bytes decodes a base64url member. Padding is tolerated: RFC 7515
// forbids it, yet some publishers add it and the bytes are the same.
func b64bytes(s, member string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("member %q missing", member)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", member, err)
	}
	return b, nil
}

func b64uint(s, member string) (*big.Int, error) {
	b, err := b64bytes(s, member)
	if err != nil {
		return nil, err
	}
	return new(big.Int).SetBytes(b), nil
}

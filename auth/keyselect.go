package auth

import (
	"github.com/golang-jwt/jwt/v5"
)

// Refusals of a token whose key is not (yet) known. Their wording is fixed:
// a kid is token text and never appears in an error.
var (
	errNoJWKSKeys   = invalid(ErrSignature, "no JWKS keys fetched yet")
	errUnknownKid   = invalid(ErrSignature, "token key id unknown")
	errKidAlgorithm = invalid(ErrAlgorithm, "token algorithm does not fit the key its kid names")
	errKidMalformed = invalid(ErrMalformed, "token key id malformed")
)

// pemKey returns the PEM keys of the token method's family: the verifier
// without JWKS, where a kid plays no part.
func (v *Verifier) pemKey(m jwt.SigningMethod) (any, error) {
	switch m := m.(type) {
	case *jwt.SigningMethodRSA:
		return keySet(v.keys.rsa)
	case *jwt.SigningMethodRSAPSS:
		return keySet(v.keys.rsa)
	case *jwt.SigningMethodECDSA:
		return keySet(v.keys.ecdsa[m.CurveBits])
	case *jwt.SigningMethodEd25519:
		return keySet(v.keys.ed)
	}
	return nil, algorithmError(m.Alg())
}

// jwksKey chooses keys for a token when JWK Sets are configured. A kid that
// names JWKS keys selects exactly those. Otherwise every key of the family
// is tried that carries no kid (PEM keys, JWKS keys without one) or, for a
// token without kid, every key of the family. An unknown kid, or no keys
// fetched yet, asks for a refresh in the background: verification never
// waits on the network, so this token is decided on the keys there are
// now and its client's retry may pass.
func (v *Verifier) jwksKey(t *jwt.Token) (any, error) {
	kid, ok := t.Header["kid"].(string)
	if !ok && t.Header["kid"] != nil {
		return nil, errKidMalformed
	}
	idx := v.jwks.index.Load()
	if named := idx.named(kid); named != nil {
		return namedKey(named, t.Method)
	}
	if idx == nil || kid != "" {
		v.jwks.requestRefresh()
	}
	keys := v.keys.fitting(t.Method, nil)
	keys = idx.fitting(t.Method, kid, keys)
	switch {
	case len(keys) > 0:
		return keyList(keys), nil
	case idx == nil:
		return nil, errNoJWKSKeys
	case kid != "":
		return nil, errUnknownKid
	}
	return nil, ErrSignature
}

// named returns the keys whose kid is kid, nil for none (or no index).
func (idx *jwkIndex) named(kid string) []jwk {
	if idx == nil || kid == "" {
		return nil
	}
	return idx.byKid[kid]
}

// fitting appends to out the keys of idx that may verify m for a token
// with kid: all of m's family without kid, else those without a kid of
// their own.
func (idx *jwkIndex) fitting(m jwt.SigningMethod, kid string, out []jwt.VerificationKey) []jwt.VerificationKey {
	if idx == nil {
		return out
	}
	for _, k := range idx.keys {
		if (kid == "" || k.kid == "") && k.verifies(m) {
			out = append(out, k.key)
		}
	}
	return out
}

// namedKey returns the keys a kid named that may verify m; when none may,
// the token's algorithm is the problem, not its signature.
func namedKey(named []jwk, m jwt.SigningMethod) (any, error) {
	if len(named) == 1 {
		// The common case, without allocating.
		if !named[0].verifies(m) {
			return nil, errKidAlgorithm
		}
		return named[0].key, nil
	}
	var keys []jwt.VerificationKey
	for _, k := range named {
		if k.verifies(m) {
			keys = append(keys, k.key)
		}
	}
	if len(keys) == 0 {
		return nil, errKidAlgorithm
	}
	return keyList(keys), nil
}

// fitting appends to out the PEM keys of m's family.
func (k *publicKeys) fitting(m jwt.SigningMethod, out []jwt.VerificationKey) []jwt.VerificationKey {
	switch m := m.(type) {
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		for _, key := range k.rsa {
			out = append(out, key)
		}
	case *jwt.SigningMethodECDSA:
		for _, key := range k.ecdsa[m.CurveBits] {
			out = append(out, key)
		}
	case *jwt.SigningMethodEd25519:
		for _, key := range k.ed {
			out = append(out, key)
		}
	}
	return out
}

// keyList returns one key as itself (jwt then reports its own error) and
// several as a set jwt tries in turn.
func keyList(keys []jwt.VerificationKey) any {
	if len(keys) == 1 {
		return keys[0]
	}
	return jwt.VerificationKeySet{Keys: keys}
}

func keySet[K jwt.VerificationKey](keys []K) (any, error) {
	switch len(keys) {
	case 0:
		return nil, ErrSignature
	case 1:
		return keys[0], nil
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k
	}
	return set, nil
}

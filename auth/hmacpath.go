package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"hash"
	"slices"
	"strings"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// hmacPath is Verify's short path for HMAC tokens whose header is one of
// those token libraries write ({"alg":"HS256","typ":"JWT"} and a few
// more). It does only what the full parse does for such a token, without
// its costs: the header is matched as text, not decoded; the key's HMAC
// state is computed once, not per token (golang-jwt calls hmac.New each
// time); the claims are read by parseClaims, not by encoding/json through
// reflection. That was about 5 µs of the 8 µs a token took, 10 % of a
// handshake's CPU in a ramp.
//
// It answers only when the token is good: the claims it checks are the
// same MapClaims the full parse would make (parseClaims declines whatever
// it cannot read the same way), checked by the same jwt.Validator and
// Verifier.claims. Whatever it declines or refuses goes to the full parse,
// which gives the error; FuzzHMACPath compares the two.
type hmacPath struct {
	algs map[string]*hmacAlg // header segment (base64url) -> its algorithm
}

// hmacAlg is one HMAC algorithm with the secret as key.
type hmacAlg struct {
	size  int       // bytes of a signature
	state sync.Pool // of *hmacState
}

// hmacState is one keyed HMAC and its scratch buffers, for one token at a
// time.
type hmacState struct {
	mac    hash.Hash
	token  []byte // a copy of the token, to hash and decode without allocating
	sig    [sha512.Size]byte
	sum    [sha512.Size]byte
	claims []byte // the decoded payload
}

// maxKeptBuffer bounds the scratch buffers a pooled state keeps: tokens
// are far smaller, and a rare large one should not pin its buffers.
const maxKeptBuffer = 4 << 10

// hmacHeaders are the header texts taken on the short path, "%s" standing
// for the algorithm: golang-jwt's, jose's and PyJWT's (the first); other
// libraries' key orders; a header with alg alone.
var hmacHeaders = []string{
	`{"alg":"%s","typ":"JWT"}`,
	`{"typ":"JWT","alg":"%s"}`,
	`{"alg":"%s"}`,
}

// newHMACPath returns the short path for secret, for the algorithms
// allowed among HS256, HS384 and HS512; nil when there is no secret.
func newHMACPath(secret []byte, allowed map[string]bool) *hmacPath {
	if len(secret) == 0 {
		return nil
	}
	p := &hmacPath{algs: map[string]*hmacAlg{}}
	for _, a := range []struct {
		name string
		hash func() hash.Hash
	}{{"HS256", sha256.New}, {"HS384", sha512.New384}, {"HS512", sha512.New}} {
		if !allowed[a.name] {
			continue
		}
		alg := &hmacAlg{size: a.hash().Size()}
		alg.state.New = func() any { return &hmacState{mac: hmac.New(a.hash, secret)} }
		for _, h := range hmacHeaders {
			p.algs[base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(h, "%s", a.name, 1)))] = alg
		}
	}
	return p
}

// verify returns the claims of token when it takes the short path and is
// good (check accepts its claims); false sends it to the full parse.
func (p *hmacPath) verify(token string, check func(jwt.MapClaims) (Claims, error)) (Claims, bool) {
	if p == nil {
		return Claims{}, false
	}
	head, rest, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, false
	}
	alg := p.algs[head]
	payload, sig, ok := strings.Cut(rest, ".")
	if alg == nil || !ok || strings.Contains(sig, ".") {
		return Claims{}, false
	}
	st := alg.state.Get().(*hmacState)
	defer alg.put(st)
	st.token = append(st.token[:0], token...)
	dot := len(head) + 1 + len(payload) // the second dot
	mc, ok := st.check(alg.size, st.token[:dot], st.token[len(head)+1:dot], st.token[dot+1:])
	if !ok {
		return Claims{}, false
	}
	c, err := check(mc)
	return c, err == nil
}

// check verifies the signature sig over input and returns the claims of
// payload, both segments as the token has them.
func (st *hmacState) check(size int, input, payload, sig []byte) (jwt.MapClaims, bool) {
	// The same decoder as golang-jwt's DecodeSegment, so that the same
	// texts decode, to the same bytes.
	enc := base64.RawURLEncoding
	if enc.DecodedLen(len(sig)) != size {
		return nil, false // the full parse refuses it as a bad signature
	}
	n, err := enc.Decode(st.sig[:], sig)
	if err != nil {
		return nil, false
	}
	st.mac.Reset()
	st.mac.Write(input)
	if !hmac.Equal(st.sig[:n], st.mac.Sum(st.sum[:0])) {
		return nil, false
	}
	st.claims = slices.Grow(st.claims[:0], enc.DecodedLen(len(payload)))[:enc.DecodedLen(len(payload))]
	if n, err = enc.Decode(st.claims, payload); err != nil {
		return nil, false
	}
	return parseClaims(st.claims[:n])
}

func (a *hmacAlg) put(st *hmacState) {
	if cap(st.token) > maxKeptBuffer {
		st.token = nil
	}
	if cap(st.claims) > maxKeptBuffer {
		st.claims = nil
	}
	a.state.Put(st)
}

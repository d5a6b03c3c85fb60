package auth

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// benchVerify reports the cost of verifying token with v.
func benchVerify(b *testing.B, v *Verifier, token string) {
	b.Helper()
	if _, err := v.Verify(token); err != nil {
		b.Fatalf("Verify: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := newTestVerifier(b, Config{Secret: testSecret})
	benchVerify(b, v, hs256(b, jwt.MapClaims{"user_id": "alice", "exp": testNow.Add(time.Hour).Unix()}))
}

// BenchmarkVerifyHS256Full is the same token through golang-jwt's parse,
// which Verify leaves such tokens to without its short path (hmacPath).
func BenchmarkVerifyHS256Full(b *testing.B) {
	v := newTestVerifier(b, Config{Secret: testSecret})
	v.short = nil
	benchVerify(b, v, hs256(b, jwt.MapClaims{"user_id": "alice", "exp": testNow.Add(time.Hour).Unix()}))
}

func BenchmarkVerifyPEMRS256(b *testing.B) {
	v := newTestVerifier(b, Config{PublicKeyFiles: []string{testdataPath("rsa_public.pem")}})
	benchVerify(b, v, signKid(b, jwt.SigningMethodRS256, privateKey(b, "rsa_private.pem"), ""))
}

// BenchmarkVerifyJWKSRS256 verifies with a key fetched from a JWK Set over
// loopback, the token naming its kid: the cost over PEM is the kid lookup.
func BenchmarkVerifyJWKSRS256(b *testing.B) {
	k := loadJWKSKeys(b)
	srv := newJWKSServer(b, rsaJWK("a", "RS256", k.rsaPub()))
	jv := startJWKS(b, Config{JWKSURLs: []string{srv.url()}}, fastJWKS)
	jv.awaitFetched(b, 1, 0)
	benchVerify(b, jv.Verifier, signKid(b, jwt.SigningMethodRS256, k.rsa, "a"))
}

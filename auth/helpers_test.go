package auth

import (
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "test-secret-do-not-use-anywhere"

// testNow is the clock every test verifier runs on.
var testNow = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func testdataPath(name string) string { return filepath.Join("testdata", name) }

// privateKey reads a PKCS#8 private key fixture from testdata.
func privateKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(testdataPath(name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return key.(crypto.Signer)
}

// newTestVerifier builds a verifier running on testNow.
func newTestVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	v.now = func() time.Time { return testNow }
	return v
}

// allKeys lists the public key fixtures, one of each type.
func allKeys() []string {
	return []string{testdataPath("rsa_public.pem"), testdataPath("ecdsa_public.pem"), testdataPath("ed25519_public.pem")}
}

// signWith signs claims with jwt itself.
func signWith(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return tok
}

// hs256 signs claims with testSecret.
func hs256(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return signWith(t, jwt.SigningMethodHS256, []byte(testSecret), claims)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// rawHS256 builds a token from exact header and payload JSON text, so tests
// control number spelling and malformed claims. The signature is a valid
// HS256 over them with secret.
func rawHS256(t testing.TB, secret, header, payload string) string {
	t.Helper()
	for _, s := range []string{header, payload} {
		if !json.Valid([]byte(s)) {
			t.Fatalf("invalid JSON in test: %s", s)
		}
	}
	signing := b64(header) + "." + b64(payload)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// assertNoTokenText fails when msg quotes token or a sizeable piece of it.
func assertNoTokenText(t testing.TB, msg, token string) {
	t.Helper()
	if token == "" {
		return
	}
	if strings.Contains(msg, token) {
		t.Fatalf("error %q contains the token", msg)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Fatalf("error %q contains token segment %q", msg, part)
		}
	}
}

// assertClaims compares claims, times by instant.
func assertClaims(t testing.TB, got, want Claims) {
	t.Helper()
	if got.UserID != want.UserID || !reflect.DeepEqual(got.Topics, want.Topics) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("claims = %+v, want %+v", got, want)
	}
}

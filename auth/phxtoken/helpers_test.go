package phxtoken

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/auth"
)

// vector is one entry of testdata/vectors.json, made by
// testdata/vectors.escript: a token Erlang signed as Plug.Crypto does.
type vector struct {
	Name       string `json:"name"`
	Secret     string `json:"secret"`
	Salt       string `json:"salt"`
	Token      string `json:"token"`
	SignedAtMs int64  `json:"signed_at_ms"`
	UserID     string `json:"user_id"`
	Error      string `json:"error"`
}

// kinds names auth's categories as the vectors do.
var kinds = map[string]error{
	"malformed":     auth.ErrMalformed,
	"signature":     auth.ErrSignature,
	"expired":       auth.ErrExpired,
	"not_valid_yet": auth.ErrNotValidYet,
	"user_claim":    auth.ErrUserClaim,
}

// testSecret is the secret key base of most vectors.
const testSecret = "Jt3lq9P0m1Vd6cQe0yW3uA8s0b7xZk2nR5hT4gF6jL8oP1iU9yT7rE3wQ2aS4dF6"

// testSignedAt is when the committed vectors were signed (2026-01-01Z).
var testSignedAt = time.UnixMilli(1767225600000)

func parseVectors(t testing.TB, data []byte) []vector {
	t.Helper()
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatalf("vectors: %v", err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	return parseVectors(t, data)
}

// vectorNamed returns the committed vector called name.
func vectorNamed(t testing.TB, name string) vector {
	t.Helper()
	for _, v := range loadVectors(t) {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no vector %q", name)
	return vector{}
}

// newVerifier builds a Verifier whose clock stands at now.
func newVerifier(t testing.TB, cfg Config, now time.Time) *Verifier {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	v.now = func() time.Time { return now }
	return v
}

// testVerifier verifies tokens signed with testSecret and the default salt,
// one second after testSignedAt.
func testVerifier(t testing.TB) *Verifier {
	t.Helper()
	return newVerifier(t, Config{SecretKeyBase: testSecret}, testSignedAt.Add(time.Second))
}

// testKey is Plug.Crypto's key for secret and salt.
func testKey(t testing.TB, secret, salt string) []byte {
	t.Helper()
	key, err := pbkdf2.Key(sha256.New, secret, []byte(salt), 1000, 32)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// signWith signs payload as Plug.Crypto.MessageVerifier.sign/2 does.
func signWith(key, payload []byte) string {
	text := "SFMyNTY." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(text))
	return text + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// sign signs payload with testSecret and the default salt.
func sign(t testing.TB, payload []byte) string {
	t.Helper()
	return signWith(testKey(t, testSecret, DefaultSalt), payload)
}

// payloadOf returns the decoded payload of a token.
func payloadOf(t testing.TB, token string) []byte {
	t.Helper()
	_, enc, _ := cutParts(t, token)
	p, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		t.Fatalf("payload of %q: %v", token, err)
	}
	return p
}

// cutParts splits a token of three parts.
func cutParts(t testing.TB, token string) (header, payload, sig string) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", token, len(parts))
	}
	return parts[0], parts[1], parts[2]
}

// checkKind fails unless err matches auth.ErrInvalidToken and kind.
func checkKind(t testing.TB, err, kind error) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %v", kind)
	}
	if !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("%q does not match auth.ErrInvalidToken", err)
	}
	if !errors.Is(err, kind) {
		t.Errorf("error %q; want one matching %q", err, kind)
	}
}

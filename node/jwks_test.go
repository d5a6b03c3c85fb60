package node

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/notify-dev/notify/internal/await"
)

// TestJWKSOnly: a node configured with a JWKS URL alone fetches the keys
// at start and takes RS256 tokens signed with them (no random secret).
func TestJWKSOnly(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(set)
	}))
	t.Cleanup(srv.Close)
	tn := startNode(t, nil, func(c *Config) {
		c.Auth.Secret = ""
		c.Auth.JWKSURLs = []string{srv.URL}
	})
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"user_id": "jwks-1", "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = "k1"
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	await.Within(t, 10*time.Second, "the JWK Set to be fetched", func() bool {
		return tn.metric("notify_jwks_keys") == 1
	})
	c := tn.dial(signed, "")
	c.handshake("jwks-1")
	if _, err := tn.tryDial(token(t, "hs-1", nil, time.Hour), "", nil); err == nil {
		t.Fatal("an HS256 token was taken with no secret configured")
	}
}

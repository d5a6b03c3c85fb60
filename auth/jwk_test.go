package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestParseJWK(t *testing.T) {
	k := loadJWKSKeys(t)
	tests := []struct {
		name    string
		jwk     map[string]any
		wantAlg string
		wantErr string // empty: usable
	}{
		{name: "RSA", jwk: rsaJWK("r", "RS256", k.rsaPub()), wantAlg: "RS256"},
		{name: "RSA without use or alg", jwk: without(rsaJWK("r", "", k.rsaPub()), "use")},
		{name: "RSA with key_ops verify", jwk: with(rsaJWK("r", "", k.rsaPub()), "key_ops", []string{"verify"})},
		{name: "EC P-256", jwk: ecJWK(t, "e", "ES256", k.ecPub()), wantAlg: "ES256"},
		{name: "Ed25519", jwk: edJWK("d", "EdDSA", k.edPub()), wantAlg: "EdDSA"},
		{name: "Ed25519 under its RFC 9864 name", jwk: edJWK("d", "Ed25519", k.edPub()), wantAlg: "EdDSA"},
		{name: "padded base64", jwk: with(edJWK("d", "", k.edPub()), "x", b64u(k.edPub())+"=")},
		{name: "use enc", jwk: with(rsaJWK("r", "", k.rsaPub()), "use", "enc"), wantErr: "not published for signatures"},
		{name: "key_ops without verify", jwk: with(rsaJWK("r", "", k.rsaPub()), "key_ops", []string{"encrypt"}), wantErr: "not published for signatures"},
		{name: "private key", jwk: with(rsaJWK("r", "", k.rsaPub()), "d", "AQAB"), wantErr: "private key material"},
		{name: "oct", jwk: map[string]any{"kty": "oct", "k": "c2VjcmV0"}, wantErr: "symmetric (oct) keys"},
		{name: "unknown kty", jwk: map[string]any{"kty": "XYZ"}, wantErr: `unsupported kty "XYZ"`},
		{name: "RSA n missing", jwk: without(rsaJWK("r", "", k.rsaPub()), "n"), wantErr: `member "n" missing`},
		{name: "RSA n not base64url", jwk: with(rsaJWK("r", "", k.rsaPub()), "n", "!!"), wantErr: `member "n"`},
		{name: "RSA even exponent", jwk: with(rsaJWK("r", "", k.rsaPub()), "e", b64u([]byte{4})), wantErr: "RSA exponent out of range"},
		{name: "RSA huge exponent", jwk: with(rsaJWK("r", "", k.rsaPub()), "e", b64u([]byte{1, 0, 0, 0, 1})), wantErr: "RSA exponent out of range"},
		{name: "RSA 512 bits", jwk: with(rsaJWK("r", "", k.rsaPub()), "n", b64u(k.rsaPub().N.Bytes()[:64])), wantErr: "RSA key has 512 bits, need at least 2048"},
		{name: "RSA alg for EC", jwk: rsaJWK("r", "ES256", k.rsaPub()), wantErr: `alg "ES256" does not fit the RSA key`},
		{name: "alg none", jwk: rsaJWK("r", "none", k.rsaPub()), wantErr: `alg "none" does not fit`},
		{name: "alg HS256", jwk: rsaJWK("r", "HS256", k.rsaPub()), wantErr: `alg "HS256" does not fit`},
		{name: "alg unknown", jwk: rsaJWK("r", "RS1", k.rsaPub()), wantErr: `alg "RS1" does not fit`},
		{name: "EC alg for another curve", jwk: ecJWK(t, "e", "ES384", k.ecPub()), wantErr: `alg "ES384" does not fit the EC key`},
		{name: "EC unknown curve", jwk: with(ecJWK(t, "e", "", k.ecPub()), "crv", "secp256k1"), wantErr: `unsupported EC curve "secp256k1"`},
		{name: "EC short coordinate", jwk: with(ecJWK(t, "e", "", k.ecPub()), "x", b64u(make([]byte, 31))), wantErr: "EC coordinates must be 32 bytes for P-256"},
		{name: "EC point off the curve", jwk: with(ecJWK(t, "e", "", k.ecPub()), "y", b64u(make([]byte, 32))), wantErr: "EC point"},
		{name: "EC y missing", jwk: without(ecJWK(t, "e", "", k.ecPub()), "y"), wantErr: `member "y" missing`},
		{name: "OKP Ed448", jwk: with(edJWK("d", "", k.edPub()), "crv", "Ed448"), wantErr: `unsupported OKP curve "Ed448"`},
		{name: "OKP short x", jwk: with(edJWK("d", "", k.edPub()), "x", b64u(make([]byte, 31))), wantErr: "Ed25519 x must be 32 bytes"},
		{name: "EdDSA alg on an EC key", jwk: ecJWK(t, "e", "EdDSA", k.ecPub()), wantErr: `alg "EdDSA" does not fit`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseJWK(decodeJWK(t, tt.jwk))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseJWK = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseJWK: %v", err)
			}
			if got.alg != tt.wantAlg || got.kid != tt.jwk["kid"] {
				t.Errorf("parseJWK = kid %q alg %q, want %v and %q", got.kid, got.alg, tt.jwk["kid"], tt.wantAlg)
			}
		})
	}
}

// TestParseJWKSet: what makes a document unusable, and the bound on its
// keys.
func TestParseJWKSet(t *testing.T) {
	k := loadJWKSKeys(t)
	one := mustJSON(t, map[string]any{"keys": []any{edJWK("d", "", k.edPub())}})
	many := make([]any, maxJWKSKeys+5)
	for i := range many {
		many[i] = edJWK(fmt.Sprint(i), "", k.edPub())
	}
	tests := []struct {
		name     string
		doc      string
		wantKeys int
		wantErr  string
	}{
		{name: "one key", doc: one, wantKeys: 1},
		{name: "bad key skipped", doc: `{"keys":[7,{"kty":"oct"},` + strings.TrimPrefix(one, `{"keys":[`), wantKeys: 1},
		{name: "bounded", doc: mustJSON(t, map[string]any{"keys": many}), wantKeys: maxJWKSKeys},
		{name: "not JSON", doc: "<html>", wantErr: "decode JWK Set"},
		{name: "keys not a list", doc: `{"keys":{}}`, wantErr: "decode JWK Set"},
		{name: "no keys member", doc: `{}`, wantErr: "no usable signature key among 0"},
		{name: "empty", doc: `{"keys":[]}`, wantErr: "no usable signature key among 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseJWKSet([]byte(tt.doc), slog.New(slog.DiscardHandler))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseJWKSet = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(keys) != tt.wantKeys {
				t.Fatalf("parseJWKSet = %d keys, %v; want %d", len(keys), err, tt.wantKeys)
			}
		})
	}
}

// TestParseJWKCurves: every curve that has a JWS algorithm parses.
func TestParseJWKCurves(t *testing.T) {
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		key, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		alg := ecdsaAlgs[c.Params().BitSize]
		if _, err := parseJWK(decodeJWK(t, ecJWK(t, "", alg, &key.PublicKey))); err != nil {
			t.Errorf("%s: %v", c.Params().Name, err)
		}
	}
}

func with(k map[string]any, member string, v any) map[string]any {
	k[member] = v
	return k
}

func without(k map[string]any, member string) map[string]any {
	delete(k, member)
	return k
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// decodeJWK goes through JSON as a fetched document does.
func decodeJWK(t *testing.T, k map[string]any) rawJWK {
	t.Helper()
	var r rawJWK
	if err := json.Unmarshal([]byte(mustJSON(t, k)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

package auth

import (
	"log/slog"
	"testing"
)

// FuzzParseJWKSet: whatever a JWKS URL serves is parsed or refused without
// a panic, and every key taken can be used to verify (it has a family).
func FuzzParseJWKSet(f *testing.F) {
	for _, s := range []string{
		`{"keys":[{"kty":"RSA","kid":"k","alg":"RS256","n":"AQAB","e":"AQAB"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		`{"keys":[]}`, `[]`, `{"keys":[1,"x",null]}`, `garbage`,
	} {
		f.Add([]byte(s))
	}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseJWKSet(b, log)
		if err != nil {
			return
		}
		if len(keys) > 100 {
			t.Fatalf("%d keys taken", len(keys))
		}
	})
}

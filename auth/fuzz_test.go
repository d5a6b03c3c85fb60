package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// verifyMessages is every text a Verify error may have for the fuzz
// verifier: fixed wording only, so no token content can leak.
func verifyMessages() map[string]bool {
	m := map[string]bool{}
	for _, err := range []error{
		ErrNoToken, ErrInvalidToken, ErrMalformed, ErrAlgorithm, ErrSignature, ErrExpired,
		ErrNotValidYet, ErrAudience, ErrIssuer, ErrUserClaim, ErrTopicsClaim,
	} {
		m[err.Error()] = true
	}
	for _, s := range []string{
		"token too large", "token critical header not supported", "token time claims malformed",
		"token algorithm missing", "token algorithm not supported",
		`user claim "user_id" missing or empty`, `user claim "user_id" must be a string or number`,
		`user claim "user_id" longer than 512 bytes`, `user claim "user_id" not a valid number or longer than 512 bytes`,
	} {
		m[s] = true
	}
	for _, alg := range jwt.GetAlgorithms() {
		m[fmt.Sprintf("algorithm %q not allowed", alg)] = true
	}
	return m
}

// signPayload wraps arbitrary bytes as an HS256-signed payload so the fuzzer
// also reaches the claim checks, which a mutated signature never does.
func signPayload(payload string) string {
	signing := b64(`{"alg":"HS256","typ":"JWT"}`) + "." + b64(payload)
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func FuzzVerify(f *testing.F) {
	v := newTestVerifier(f, Config{Secret: testSecret, PublicKeyFiles: allKeys()})
	f.Add(hs256(f, jwt.MapClaims{"user_id": "alice", "topics": []string{"news"}}))
	f.Add(signWith(f, jwt.SigningMethodRS256, privateKey(f, "rsa_private.pem"), jwt.MapClaims{"user_id": "alice"}))
	f.Add(signWith(f, jwt.SigningMethodPS256, privateKey(f, "rsa_private.pem"), jwt.MapClaims{"user_id": 7}))
	f.Add(signWith(f, jwt.SigningMethodES256, privateKey(f, "ecdsa_private.pem"), jwt.MapClaims{"user_id": "alice"}))
	f.Add(signWith(f, jwt.SigningMethodEdDSA, privateKey(f, "ed25519_private.pem"), jwt.MapClaims{"user_id": "alice"}))
	f.Add(`{"user_id":1e3,"topics":["a",""],"exp":99999999999}`)

	messages := verifyMessages()
	check := func(t *testing.T, token string) {
		t.Helper()
		c, err := v.Verify(token)
		if err == nil {
			if strings.TrimSpace(c.UserID) == "" || len(c.UserID) > maxUserIDLen {
				t.Fatalf("Verify accepted user id %q", c.UserID)
			}
			for _, topic := range c.Topics {
				if topic == "" {
					t.Fatal("Verify returned an empty topic")
				}
			}
			return
		}
		if !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrNoToken) {
			t.Fatalf("error %q matches neither ErrInvalidToken nor ErrNoToken", err)
		}
		if !messages[err.Error()] {
			t.Fatalf("unexpected error text %q", err)
		}
		if c.UserID != "" || c.Topics != nil || !c.ExpiresAt.IsZero() {
			t.Fatalf("claims %+v returned with error %q", c, err)
		}
	}
	f.Fuzz(func(t *testing.T, token string) {
		check(t, token)
		check(t, signPayload(token))
	})
}

func FuzzTokenFromRequest(f *testing.F) {
	f.Add("session", "c.c.c", "Bearer h.h.h", "q.q.q")
	f.Add("", "c.c.c", "Basic dXNlcjpwYXNz", "Bearer q.q.q")
	f.Add("session", " ", " bearer\t h ", " ")

	f.Fuzz(func(t *testing.T, cookieName, cookie, header, query string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/notify/ws"}, Header: http.Header{}}
		if cookie != "" {
			r.Header.Set("Cookie", cookieName+"="+cookie)
		}
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		if query != "" {
			r.URL.RawQuery = "authorization=" + url.QueryEscape(query)
		}

		tok, src := TokenFromRequest(r, cookieName)

		if tok != strings.TrimSpace(tok) {
			t.Fatalf("token %q has surrounding spaces", tok)
		}
		if (tok == "") != (src == SourceNone) {
			t.Fatalf("token %q with source %v", tok, src)
		}

		// What each source offers, worked out independently.
		cookieFound := false
		if cookieName != "" {
			for _, c := range r.CookiesNamed(cookieName) {
				cookieFound = cookieFound || strings.TrimSpace(c.Value) != ""
			}
		}
		h := strings.TrimSpace(header)
		// "Bearer <token>", or a raw token (one word, not "bearer" alone),
		// as the older Notify accepted.
		headerFound := len(h) > 7 && strings.EqualFold(h[:6], "bearer") &&
			(h[6] == ' ' || h[6] == '\t') && strings.TrimSpace(h[7:]) != "" ||
			h != "" && !strings.ContainsAny(h, " \t") && !strings.EqualFold(h, "bearer")

		want := SourceNone
		switch {
		case cookieFound:
			want = SourceCookie
		case headerFound:
			want = SourceHeader
		case tok != "":
			want = SourceQuery
		}
		if src != want {
			t.Fatalf("source %v, want %v (token %q)", src, want, tok)
		}
		var from string
		switch src {
		case SourceCookie:
			from = r.Header.Get("Cookie")
		case SourceHeader:
			from = header
		case SourceQuery:
			from = query
		}
		if !strings.Contains(from, tok) {
			t.Fatalf("token %q not from its source %v (%q)", tok, src, from)
		}
	})
}

func FuzzDecimalString(f *testing.F) {
	for _, s := range []string{"0", "-0.0e5", "42", "12345678901234567890", "1e3", "1.50", "5e-2", "-1.25E+2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, num string) {
		out, ok := decimalString(num, maxUserIDLen)
		if !ok {
			return
		}
		if len(out) > maxUserIDLen {
			t.Fatalf("decimalString(%q) = %d bytes", num, len(out))
		}
		if strings.ContainsAny(out, "eE+") || strings.HasSuffix(out, ".") {
			t.Fatalf("decimalString(%q) = %q, not plain decimal", num, out)
		}
		// Compare values exactly, keeping big.Rat away from huge exponents.
		if len(num) > 64 || strings.ContainsAny(num, "eE") && len(num[strings.IndexAny(num, "eE"):]) > 4 {
			return
		}
		in, okIn := new(big.Rat).SetString(num)
		got, okOut := new(big.Rat).SetString(out)
		if !okIn || !okOut || in.Cmp(got) != 0 {
			t.Fatalf("decimalString(%q) = %q, a different value", num, out)
		}
	})
}

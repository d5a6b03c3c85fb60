package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerify(t *testing.T) {
	f := newVerifyFixtures(t)
	tests := slices.Concat(
		absentOrUnparsableCases(t, f),
		algorithmCases(t, f),
		signatureCases(t, f),
		familyCases(t, f),
		timeClaimCases(t, f),
		audienceIssuerCases(t, f),
		userClaimCases(t, f),
		topicsClaimCases(t, f),
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkVerify(t, tt) })
	}
}

// checkVerify runs one case: either the claims it wants, or an error of the
// kind and text it wants, with no claims and no piece of the token.
func checkVerify(t *testing.T, tt verifyCase) {
	t.Helper()
	got, err := tt.v.Verify(tt.token)
	if tt.wantErr == nil {
		if err != nil {
			t.Fatalf("Verify: unexpected error %q", err)
		}
		assertClaims(t, got, tt.want)
		return
	}
	if err == nil {
		t.Fatalf("Verify = %+v, want error %q", got, tt.wantErr)
	}
	if !errors.Is(err, tt.wantErr) {
		t.Errorf("Verify error %q does not match %q", err, tt.wantErr)
	}
	if !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrNoToken) {
		t.Errorf("Verify error %q matches neither ErrInvalidToken nor ErrNoToken", err)
	}
	if tt.wantMsg != "" && err.Error() != tt.wantMsg {
		t.Errorf("Verify error = %q, want %q", err, tt.wantMsg)
	}
	if !reflect.DeepEqual(got, Claims{}) {
		t.Errorf("Verify returned claims %+v with an error", got)
	}
	assertNoTokenText(t, err.Error(), tt.token)
}

// verifyCase is one token of TestVerify, the verifier it goes to and what
// Verify must make of it.
type verifyCase struct {
	name    string
	v       *Verifier
	token   string
	wantErr error  // nil: success expected
	wantMsg string // exact error text when set
	want    Claims
}

// verifyFixtures are the verifiers, keys and tokens TestVerify's cases are
// built from.
type verifyFixtures struct {
	secretOnly, keysOnly, both, audIss, customClaim, twoRSA *Verifier

	rsaKey, rsa2Key, ecKey, edKey crypto.Signer
	p384                          *ecdsa.PrivateKey
	rsaPublicPEM                  []byte

	alice        Claims
	long         string   // a user ID at the length limit
	good         string   // an HS256 token for alice
	goodParts    []string // good's three segments
	otherPayload string   // the payload segment of a token for mallory
}

func newVerifyFixtures(t *testing.T) *verifyFixtures {
	t.Helper()
	f := &verifyFixtures{
		secretOnly:  newTestVerifier(t, Config{Secret: testSecret}),
		keysOnly:    newTestVerifier(t, Config{PublicKeyFiles: allKeys()}),
		both:        newTestVerifier(t, Config{Secret: testSecret, PublicKeyFiles: allKeys()}),
		audIss:      newTestVerifier(t, Config{Secret: testSecret, Audience: "notify", Issuer: "https://issuer.example"}),
		customClaim: newTestVerifier(t, Config{Secret: testSecret, UserClaim: "sub"}),
		twoRSA:      newTestVerifier(t, Config{PublicKeyFiles: []string{testdataPath("rsa_public.pem"), testdataPath("rsa2_public.pem")}}),

		rsaKey:  privateKey(t, "rsa_private.pem"),
		rsa2Key: privateKey(t, "rsa2_private.pem"),
		ecKey:   privateKey(t, "ecdsa_private.pem"),
		edKey:   privateKey(t, "ed25519_private.pem"),

		alice: Claims{UserID: "alice"},
		long:  strings.Repeat("x", maxUserIDLen),
		good:  hs256(t, userClaims(nil)),
	}
	var err error
	f.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.rsaPublicPEM, err = os.ReadFile(testdataPath("rsa_public.pem"))
	if err != nil {
		t.Fatal(err)
	}
	f.goodParts = strings.Split(f.good, ".")
	f.otherPayload = strings.Split(hs256(t, jwt.MapClaims{"user_id": "mallory"}), ".")[1]
	return f
}

// userClaims are alice's claims with extra ones added.
func userClaims(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"user_id": "alice"}
	for k, val := range extra {
		c[k] = val
	}
	return c
}

// rawUser is an HS256 token with testSecret over the exact payload text.
func rawUser(t *testing.T, payload string) string {
	t.Helper()
	return rawHS256(t, testSecret, `{"alg":"HS256","typ":"JWT"}`, payload)
}

// absentOrUnparsableCases are tokens that are absent or do not parse.
func absentOrUnparsableCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "empty", v: f.both, token: "", wantErr: ErrNoToken, wantMsg: "no token"},
		{name: "blank", v: f.both, token: " \t ", wantErr: ErrNoToken},
		{name: "garbage", v: f.both, token: "not-a-token", wantErr: ErrMalformed, wantMsg: "token malformed"},
		{name: "three garbage segments", v: f.both, token: "aaaa.bbbb.cccc", wantErr: ErrMalformed},
		{name: "four segments", v: f.both, token: f.good + ".x", wantErr: ErrMalformed},
		{name: "binary", v: f.both, token: "\x00\xff\xfe.\x01\x02.\x80", wantErr: ErrMalformed},
		{name: "header not an object", v: f.both, token: b64(`[1]`) + "." + b64(`{}`) + ".", wantErr: ErrMalformed},
		{name: "payload not an object", v: f.secretOnly, token: rawUser(t, `["user_id"]`), wantErr: ErrMalformed},
		{name: "huge", v: f.both, token: strings.Repeat("a", maxTokenLen+1), wantErr: ErrMalformed, wantMsg: "token too large"},
		{name: "critical header", v: f.secretOnly, token: rawHS256(t, testSecret, `{"alg":"HS256","crit":["b64"],"b64":false}`, `{"user_id":"alice"}`), wantErr: ErrMalformed},
	}
}

// algorithmCases are tokens whose algorithm is refused or does not fit the key.
func algorithmCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "alg none", v: f.both, token: b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"user_id":"alice"}`) + ".", wantErr: ErrAlgorithm, wantMsg: `algorithm "none" not allowed`},
		{name: "alg None spelled otherwise", v: f.both, token: b64(`{"alg":"None"}`) + "." + b64(`{"user_id":"alice"}`) + ".", wantErr: ErrAlgorithm, wantMsg: "token algorithm not supported"},
		{name: "alg missing", v: f.both, token: b64(`{"typ":"JWT"}`) + "." + b64(`{"user_id":"alice"}`) + ".", wantErr: ErrAlgorithm, wantMsg: "token algorithm missing"},
		{name: "alg not a string", v: f.both, token: b64(`{"alg":256}`) + "." + b64(`{"user_id":"alice"}`) + ".", wantErr: ErrAlgorithm},
		{name: "HS256 keyed with public key PEM, keys only", v: f.keysOnly, token: signWith(t, jwt.SigningMethodHS256, f.rsaPublicPEM, userClaims(nil)), wantErr: ErrAlgorithm, wantMsg: `algorithm "HS256" not allowed`},
		{name: "HS256 keyed with public key PEM, secret too", v: f.both, token: signWith(t, jwt.SigningMethodHS256, f.rsaPublicPEM, userClaims(nil)), wantErr: ErrSignature, wantMsg: "token signature invalid"},
		{name: "RS256 without public keys", v: f.secretOnly, token: signWith(t, jwt.SigningMethodRS256, f.rsaKey, userClaims(nil)), wantErr: ErrAlgorithm, wantMsg: `algorithm "RS256" not allowed`},
		{name: "ES384 with only a P-256 key", v: f.keysOnly, token: signWith(t, jwt.SigningMethodES384, f.p384, userClaims(nil)), wantErr: ErrAlgorithm, wantMsg: `algorithm "ES384" not allowed`},
		{name: "ES256 header over an RSA signature", v: f.keysOnly, token: b64(`{"alg":"ES256"}`) + "." + strings.Join(strings.Split(signWith(t, jwt.SigningMethodRS256, f.rsaKey, userClaims(nil)), ".")[1:], "."), wantErr: ErrSignature},
	}
}

// signatureCases are tokens whose signature is checked against the right key or refused.
func signatureCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "wrong secret", v: f.secretOnly, token: signWith(t, jwt.SigningMethodHS256, []byte("another-secret"), userClaims(nil)), wantErr: ErrSignature, wantMsg: "token signature invalid"},
		{name: "tampered payload", v: f.secretOnly, token: f.goodParts[0] + "." + f.otherPayload + "." + f.goodParts[2], wantErr: ErrSignature},
		{name: "signature stripped", v: f.secretOnly, token: f.goodParts[0] + "." + f.goodParts[1] + ".", wantErr: ErrSignature},
		{name: "RS256 by an unknown key", v: f.keysOnly, token: signWith(t, jwt.SigningMethodRS256, f.rsa2Key, userClaims(nil)), wantErr: ErrSignature},
		{name: "RS256 by the second key of a set", v: f.twoRSA, token: signWith(t, jwt.SigningMethodRS256, f.rsa2Key, userClaims(nil)), want: f.alice},
		{name: "RS256 by the first key of a set", v: f.twoRSA, token: signWith(t, jwt.SigningMethodRS256, f.rsaKey, userClaims(nil)), want: f.alice},
	}
}

// familyCases are good tokens for every algorithm family.
func familyCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "HS256", v: f.secretOnly, token: f.good, want: f.alice},
		{name: "HS384", v: f.secretOnly, token: signWith(t, jwt.SigningMethodHS384, []byte(testSecret), userClaims(nil)), want: f.alice},
		{name: "HS512", v: f.both, token: signWith(t, jwt.SigningMethodHS512, []byte(testSecret), userClaims(nil)), want: f.alice},
		{name: "RS256", v: f.keysOnly, token: signWith(t, jwt.SigningMethodRS256, f.rsaKey, userClaims(nil)), want: f.alice},
		{name: "RS512", v: f.both, token: signWith(t, jwt.SigningMethodRS512, f.rsaKey, userClaims(nil)), want: f.alice},
		{name: "PS256", v: f.keysOnly, token: signWith(t, jwt.SigningMethodPS256, f.rsaKey, userClaims(nil)), want: f.alice},
		{name: "PS384", v: f.keysOnly, token: signWith(t, jwt.SigningMethodPS384, f.rsaKey, userClaims(nil)), want: f.alice},
		{name: "ES256", v: f.keysOnly, token: signWith(t, jwt.SigningMethodES256, f.ecKey, userClaims(nil)), want: f.alice},
		{name: "EdDSA", v: f.keysOnly, token: signWith(t, jwt.SigningMethodEdDSA, f.edKey, userClaims(nil)), want: f.alice},
	}
}

// timeClaimCases are the time claims, with zero leeway.
func timeClaimCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "expired", v: f.secretOnly, token: hs256(t, userClaims(jwt.MapClaims{"exp": testNow.Add(-time.Second).Unix()})), wantErr: ErrExpired, wantMsg: "token expired"},
		{name: "expires now", v: f.secretOnly, token: hs256(t, userClaims(jwt.MapClaims{"exp": testNow.Unix()})), wantErr: ErrExpired},
		{name: "expires in a second", v: f.secretOnly, token: hs256(t, userClaims(jwt.MapClaims{"exp": testNow.Add(time.Second).Unix()})), want: Claims{UserID: "alice", ExpiresAt: testNow.Add(time.Second)}},
		{name: "expired and not yet valid", v: f.secretOnly, token: hs256(t, userClaims(jwt.MapClaims{"exp": testNow.Add(-time.Hour).Unix(), "nbf": testNow.Add(time.Hour).Unix()})), wantErr: ErrExpired},
		{name: "nbf in the future", v: f.secretOnly, token: hs256(t, userClaims(jwt.MapClaims{"nbf": testNow.Add(time.Second).Unix()})), wantErr: ErrNotValidYet, wantMsg: "token not valid yet"},
		{name: "nbf now", v: f.secretOnly, token: hs256(t, userClaims(jwt.MapClaims{"nbf": testNow.Unix()})), want: f.alice},
		{name: "exp a string", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","exp":"tomorrow"}`), wantErr: ErrMalformed},
		{name: "nbf absurdly far", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","nbf":1e300}`), wantErr: ErrInvalidToken},
		{name: "exp absurdly far", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","exp":1e300}`), wantErr: ErrInvalidToken},
		{name: "exp fractional", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","exp":`+strconv.FormatInt(testNow.Unix()+3600, 10)+`.5}`), want: Claims{UserID: "alice", ExpiresAt: testNow.Add(time.Hour)}},
	}
}

// audienceIssuerCases are the audience and issuer checks.
func audienceIssuerCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "audience and issuer match", v: f.audIss, token: hs256(t, userClaims(jwt.MapClaims{"aud": "notify", "iss": "https://issuer.example"})), want: f.alice},
		{name: "audience listed in an array", v: f.audIss, token: hs256(t, userClaims(jwt.MapClaims{"aud": []string{"other", "notify"}, "iss": "https://issuer.example"})), want: f.alice},
		{name: "wrong audience", v: f.audIss, token: hs256(t, userClaims(jwt.MapClaims{"aud": "other", "iss": "https://issuer.example"})), wantErr: ErrAudience, wantMsg: "token audience not accepted"},
		{name: "missing audience", v: f.audIss, token: hs256(t, userClaims(jwt.MapClaims{"iss": "https://issuer.example"})), wantErr: ErrAudience},
		{name: "audience of wrong type", v: f.audIss, token: rawUser(t, `{"user_id":"alice","aud":[1],"iss":"https://issuer.example"}`), wantErr: ErrAudience},
		{name: "wrong issuer", v: f.audIss, token: hs256(t, userClaims(jwt.MapClaims{"aud": "notify", "iss": "https://evil.example"})), wantErr: ErrIssuer, wantMsg: "token issuer not accepted"},
		{name: "missing issuer", v: f.audIss, token: hs256(t, userClaims(jwt.MapClaims{"aud": "notify"})), wantErr: ErrIssuer},
		{name: "audience ignored when not configured", v: f.secretOnly, token: hs256(t, userClaims(jwt.MapClaims{"aud": "anything", "iss": "anyone"})), want: f.alice},
	}
}

// userClaimCases are the user claim: missing, mistyped, too long, numeric, or renamed.
func userClaimCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "user claim missing", v: f.secretOnly, token: rawUser(t, `{"sub":"alice"}`), wantErr: ErrUserClaim, wantMsg: `user claim "user_id" missing or empty`},
		{name: "user claim empty", v: f.secretOnly, token: rawUser(t, `{"user_id":""}`), wantErr: ErrUserClaim, wantMsg: `user claim "user_id" missing or empty`},
		{name: "user claim blank", v: f.secretOnly, token: rawUser(t, `{"user_id":" \t"}`), wantErr: ErrUserClaim, wantMsg: `user claim "user_id" missing or empty`},
		{name: "user claim null", v: f.secretOnly, token: rawUser(t, `{"user_id":null}`), wantErr: ErrUserClaim},
		{name: "user claim bool", v: f.secretOnly, token: rawUser(t, `{"user_id":true}`), wantErr: ErrUserClaim, wantMsg: `user claim "user_id" must be a string or number`},
		{name: "user claim object", v: f.secretOnly, token: rawUser(t, `{"user_id":{"id":1}}`), wantErr: ErrUserClaim},
		{name: "user claim array", v: f.secretOnly, token: rawUser(t, `{"user_id":["alice"]}`), wantErr: ErrUserClaim},
		{name: "user claim at the length limit", v: f.secretOnly, token: rawUser(t, `{"user_id":"`+f.long+`"}`), want: Claims{UserID: f.long}},
		{name: "user claim too long", v: f.secretOnly, token: rawUser(t, `{"user_id":"`+f.long+`x"}`), wantErr: ErrUserClaim, wantMsg: `user claim "user_id" longer than 512 bytes`},
		{name: "user claim kept as is", v: f.secretOnly, token: rawUser(t, `{"user_id":" alice "}`), want: Claims{UserID: " alice "}},
		{name: "numeric user claim", v: f.secretOnly, token: rawUser(t, `{"user_id":42}`), want: Claims{UserID: "42"}},
		{name: "numeric user claim beyond float precision", v: f.secretOnly, token: rawUser(t, `{"user_id":12345678901234567890}`), want: Claims{UserID: "12345678901234567890"}},
		{name: "numeric user claim with exponent", v: f.secretOnly, token: rawUser(t, `{"user_id":1e3}`), want: Claims{UserID: "1000"}},
		{name: "numeric user claim with signed exponent", v: f.secretOnly, token: rawUser(t, `{"user_id":12E+1}`), want: Claims{UserID: "120"}},
		{name: "numeric user claim not an integer", v: f.secretOnly, token: rawUser(t, `{"user_id":1.5}`), want: Claims{UserID: "1.5"}},
		{name: "numeric user claim negative", v: f.secretOnly, token: rawUser(t, `{"user_id":-7}`), want: Claims{UserID: "-7"}},
		{name: "numeric user claim zero", v: f.secretOnly, token: rawUser(t, `{"user_id":0}`), want: Claims{UserID: "0"}},
		{name: "numeric user claim too long", v: f.secretOnly, token: rawUser(t, `{"user_id":1e999999999}`), wantErr: ErrUserClaim},
		{name: "custom user claim", v: f.customClaim, token: rawUser(t, `{"sub":"alice"}`), want: f.alice},
		{name: "custom user claim numeric", v: f.customClaim, token: rawUser(t, `{"sub":7}`), want: Claims{UserID: "7"}},
		{name: "custom user claim missing", v: f.customClaim, token: rawUser(t, `{"user_id":"alice"}`), wantErr: ErrUserClaim, wantMsg: `user claim "sub" missing or empty`},
	}
}

// topicsClaimCases are the topics claim.
func topicsClaimCases(t *testing.T, f *verifyFixtures) []verifyCase {
	return []verifyCase{
		{name: "topics absent", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice"}`), want: f.alice},
		{name: "topics null", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","topics":null}`), want: f.alice},
		{name: "topics empty", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","topics":[]}`), want: f.alice},
		{name: "topics listed", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","topics":["news","chat"]}`), want: Claims{UserID: "alice", Topics: []string{"news", "chat"}}},
		{name: "topics empty names dropped", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","topics":["","news",""]}`), want: Claims{UserID: "alice", Topics: []string{"news"}}},
		{name: "topics a string", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","topics":"news"}`), wantErr: ErrTopicsClaim, wantMsg: `"topics" claim must be an array of strings`},
		{name: "topics with a number", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","topics":["news",1]}`), wantErr: ErrTopicsClaim},
		{name: "topics an object", v: f.secretOnly, token: rawUser(t, `{"user_id":"alice","topics":{"news":true}}`), wantErr: ErrTopicsClaim},
	}
}

func TestErrorKinds(t *testing.T) {
	kinds := []error{ErrMalformed, ErrAlgorithm, ErrSignature, ErrExpired, ErrNotValidYet, ErrAudience, ErrIssuer, ErrUserClaim, ErrTopicsClaim}
	for _, k := range kinds {
		if !errors.Is(k, ErrInvalidToken) {
			t.Errorf("%q does not match ErrInvalidToken", k)
		}
		if errors.Is(k, ErrNoToken) {
			t.Errorf("%q matches ErrNoToken", k)
		}
		for _, other := range kinds {
			if other != k && errors.Is(k, other) {
				t.Errorf("%q matches %q", k, other)
			}
		}
	}
	if errors.Is(ErrNoToken, ErrInvalidToken) {
		t.Error("ErrNoToken matches ErrInvalidToken")
	}
}

func TestClaimsAllows(t *testing.T) {
	c := Claims{UserID: "alice", Topics: []string{"news", "chat"}}
	tests := []struct {
		claims Claims
		topic  string
		want   bool
	}{
		{c, "news", true},
		{c, "chat", true},
		{c, "sport", false},
		{c, "", false},
		{c, "News", false},
		{Claims{UserID: "alice"}, "news", false},
	}
	for _, tt := range tests {
		if got := tt.claims.Allows(tt.topic); got != tt.want {
			t.Errorf("%v.Allows(%q) = %v, want %v", tt.claims.Topics, tt.topic, got, tt.want)
		}
	}
}

func TestVerifyConcurrent(t *testing.T) {
	v := newTestVerifier(t, Config{Secret: testSecret, PublicKeyFiles: allKeys()})
	tokens := []string{
		hs256(t, jwt.MapClaims{"user_id": "alice"}),
		signWith(t, jwt.SigningMethodES256, privateKey(t, "ecdsa_private.pem"), jwt.MapClaims{"user_id": "bob"}),
		"garbage",
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				_, _ = v.Verify(tokens[(i+j)%len(tokens)])
			}
		})
	}
	wg.Wait()
}

func TestDecimalString(t *testing.T) {
	tests := []struct {
		in     string
		want   string
		wantOK bool
	}{
		{"0", "0", true},
		{"-0", "0", true},
		{"0.000", "0", true},
		{"0e99999999999999", "0", true},
		{"42", "42", true},
		{"-42", "-42", true},
		{"12345678901234567890", "12345678901234567890", true},
		{"1e3", "1000", true},
		{"1E3", "1000", true},
		{"1e+3", "1000", true},
		{"1.5", "1.5", true},
		{"1.50", "1.5", true},
		{"100", "100", true},
		{"0.05", "0.05", true},
		{"5e-2", "0.05", true},
		{"12.5e1", "125", true},
		{"12.5e-1", "1.25", true},
		{"-1.25e2", "-125", true},
		{"1e511", "1" + strings.Repeat("0", 511), true},
		{"1e512", "", false},
		{"1e-600", "", false},
		{"1e99999999999", "", false},
		{"", "", false},
		{"-", "", false},
		{"1.", "", false},
		{".5", "", false},
		{"1e", "", false},
		{"abc", "", false},
		{"1x", "", false},
	}
	for _, tt := range tests {
		got, ok := decimalString(tt.in, maxUserIDLen)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("decimalString(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

// The edge cases of each step: parsing (zeros, exponents, malformed input)
// and formatting (the size limit in each output form).
func TestDecimalStringEdges(t *testing.T) {
	tests := []struct {
		in     string
		want   string
		wantOK bool
	}{
		// Leading and trailing zeros.
		{"007", "7", true},
		{"00.0012", "0.0012", true},
		{"120e-1", "12", true},
		{"1.5e0", "1.5", true},
		{"-0.0e5", "0", true},
		{"-0e-99999999999", "0", true},
		{"-1e-2", "-0.01", true},
		// Exponent syntax and range.
		{"1e-0", "1", true},
		{"1e+", "", false},
		{"1e-", "", false},
		{"1e--2", "", false},
		{"1e5.0", "", false},
		{"0eA", "", false},
		{"0e", "", false},
		{"1e2147483647", "", false},
		{"1e2147483648", "", false},
		{"1e-2147483648", "", false},
		{"1e-2147483649", "", false},
		// Other malformed mantissas.
		{"+1", "", false},
		{"--1", "", false},
		{"-.5", "", false},
		{"1.2.3", "", false},
		// The size limit in each form, the sign included.
		{"-1e510", "-1" + strings.Repeat("0", 510), true},
		{"-1e511", "", false},
		{"1e-510", "0." + strings.Repeat("0", 509) + "1", true},
		{"1e-511", "", false},
		{"-1e-509", "-0." + strings.Repeat("0", 508) + "1", true},
		{"-1e-510", "", false},
		{"1." + strings.Repeat("1", 510), "1." + strings.Repeat("1", 510), true},
		{"1." + strings.Repeat("1", 511), "", false},
	}
	for _, tt := range tests {
		got, ok := decimalString(tt.in, maxUserIDLen)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("decimalString(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

// The size check in each output form, against a small limit.
func TestDecimalStringMax(t *testing.T) {
	tests := []struct {
		in     string
		max    int
		want   string
		wantOK bool
	}{
		{"12.5", 4, "12.5", true},
		{"12.5", 3, "", false},
		{"-12.5", 5, "-12.5", true},
		{"-12.5", 4, "", false},
		{"5e-2", 4, "0.05", true},
		{"5e-2", 3, "", false},
		{"1e3", 4, "1000", true},
		{"1e3", 3, "", false},
		{"-1e3", 4, "", false},
	}
	for _, tt := range tests {
		got, ok := decimalString(tt.in, tt.max)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("decimalString(%q, %d) = %q, %v; want %q, %v", tt.in, tt.max, got, ok, tt.want, tt.wantOK)
		}
	}
}

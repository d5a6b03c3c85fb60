package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"hash"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signRaw signs header and payload, any bytes, with testSecret.
func signRaw(newHash func() hash.Hash, header, payload string) string {
	signing := b64(header) + "." + b64(payload)
	mac := hmac.New(newHash, []byte(testSecret))
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

const hs256Header = `{"alg":"HS256","typ":"JWT"}`

// sameAsFull fails t unless Verify answers for token what the full parse
// answers, claims and error text alike; it reports whether the short path
// took the token.
func sameAsFull(t *testing.T, v *Verifier, token string) bool {
	t.Helper()
	short, taken := v.short.verify(token, v.checkShort)
	full, fullErr := v.verifyFull(token)
	if taken && strings.TrimSpace(token) == "" {
		t.Fatal("the short path took a blank token")
	}
	got, err := v.Verify(token)
	if strings.TrimSpace(token) == "" || len(token) > maxTokenLen {
		return taken // refused before either path
	}
	if taken && (fullErr != nil || !reflect.DeepEqual(short, full)) {
		t.Fatalf("short path: %+v; full parse: %+v, %v", short, full, fullErr)
	}
	if !reflect.DeepEqual(got, full) || (err == nil) != (fullErr == nil) || err != nil && err.Error() != fullErr.Error() {
		t.Fatalf("Verify: %+v, %v; full parse: %+v, %v", got, err, full, fullErr)
	}
	return taken
}

func TestHMACPathTaken(t *testing.T) {
	v := newTestVerifier(t, Config{Secret: testSecret, PublicKeyFiles: allKeys()})
	future, past := testNow.Add(time.Hour).Unix(), testNow.Add(-time.Hour).Unix()
	for _, tt := range []struct {
		name, header, payload string
		hash                  func() hash.Hash
	}{
		{"user id", hs256Header, `{"user_id":"alice"}`, sha256.New},
		{"other key order", `{"typ":"JWT","alg":"HS256"}`, `{"user_id":"alice"}`, sha256.New},
		{"alg alone", `{"alg":"HS256"}`, `{"user_id":"alice"}`, sha256.New},
		{"HS384", `{"alg":"HS384","typ":"JWT"}`, `{"user_id":"alice"}`, sha512.New384},
		{"HS512", `{"alg":"HS512","typ":"JWT"}`, `{"user_id":"alice"}`, sha512.New},
		{"numeric id", hs256Header, `{"user_id":1e3}`, sha256.New},
		{"large numeric id", hs256Header, `{"user_id":-12345678901234567890.50}`, sha256.New},
		{"topics", hs256Header, `{"user_id":"a","topics":["news","","x"]}`, sha256.New},
		{"no topics", hs256Header, `{"user_id":"a","topics":[]}`, sha256.New},
		{"null topics", hs256Header, `{"user_id":"a","topics":null}`, sha256.New},
		{"exp and nbf", hs256Header, `{"user_id":"a","exp":` + itoa(future) + `,"nbf":` + itoa(past) + `}`, sha256.New},
		{"fractional exp", hs256Header, `{"user_id":"a","exp":` + itoa(future) + `.75}`, sha256.New},
		{"other claims", hs256Header, `{"user_id":"a","sub":"x","iat":1,"admin":true,"beta":false,"n":null,"list":[1,"two",true,null]}` + "\n", sha256.New},
		{"whitespace", hs256Header, " {\t\"user_id\" :\r\n \"a\" , \"exp\" : " + itoa(future) + " } \n", sha256.New},
		{"duplicate key", hs256Header, `{"user_id":"first","user_id":"second"}`, sha256.New},
		{"duplicate user claim", hs256Header, `{"user_id":"first","user_id":7}`, sha256.New},
	} {
		t.Run(tt.name, func(t *testing.T) {
			token := signRaw(tt.hash, tt.header, tt.payload)
			if !sameAsFull(t, v, token) {
				t.Fatal("the short path declined the token")
			}
		})
	}
}

// Tokens the short path leaves to the full parse, good or not: what
// Verify answers is the full parse's.
func TestHMACPathDeclined(t *testing.T) {
	v := newTestVerifier(t, Config{Secret: testSecret, PublicKeyFiles: allKeys()})
	good := signRaw(sha256.New, hs256Header, `{"user_id":"alice"}`)
	head, rest, _ := strings.Cut(good, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	expired := itoa(testNow.Add(-time.Second).Unix())
	for _, tt := range []struct{ name, token string }{
		{"escape in a string", signRaw(sha256.New, hs256Header, `{"user_id":"al\u0069ce"}`)},
		{"UTF-8 in a string", signRaw(sha256.New, hs256Header, `{"user_id":"zoë"}`)},
		{"control byte", signRaw(sha256.New, hs256Header, "{\"user_id\":\"a\tb\"}")},
		{"nested object", signRaw(sha256.New, hs256Header, `{"user_id":"a","o":{"k":1}}`)},
		{"nested array", signRaw(sha256.New, hs256Header, `{"user_id":"a","topics":[["x"]]}`)},
		{"trailing data", signRaw(sha256.New, hs256Header, `{"user_id":"a"} x`)},
		{"trailing object", signRaw(sha256.New, hs256Header, `{"user_id":"a"}{"user_id":"b"}`)},
		{"not an object", signRaw(sha256.New, hs256Header, `null`)},
		{"leading zero", signRaw(sha256.New, hs256Header, `{"user_id":01}`)},
		{"bad exponent", signRaw(sha256.New, hs256Header, `{"user_id":1e}`)},
		{"trailing comma", signRaw(sha256.New, hs256Header, `{"user_id":"a",}`)},
		{"expired", signRaw(sha256.New, hs256Header, `{"user_id":"a","exp":`+expired+`}`)},
		{"exp a string", signRaw(sha256.New, hs256Header, `{"user_id":"a","exp":"soon"}`)},
		{"no user", signRaw(sha256.New, hs256Header, `{"sub":"a"}`)},
		{"topics not strings", signRaw(sha256.New, hs256Header, `{"user_id":"a","topics":[1]}`)},
		{"header with kid", signRaw(sha256.New, `{"alg":"HS256","kid":"k","typ":"JWT"}`, `{"user_id":"a"}`)},
		{"header with crit", signRaw(sha256.New, `{"alg":"HS256","crit":["x"]}`, `{"user_id":"a"}`)},
		{"header and hash differ", signRaw(sha512.New, hs256Header, `{"user_id":"a"}`)},
		{"wrong signature", head + "." + payload + "." + strings.Repeat("A", len(sig))},
		{"newline in the signature", head + "." + payload + "." + sig[:10] + "\n" + sig[10:]},
		{"newline in the payload", head + "." + payload[:5] + "\r\n" + payload[5:] + "." + sig},
		{"four segments", good + ".x"},
		{"two segments", head + "." + payload},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if sameAsFull(t, v, tt.token) {
				t.Fatal("the short path took the token")
			}
		})
	}
}

// The short path is off without a secret, and for HMAC algorithms not
// allowed; aud and iss are checked on it as on the full parse.
func TestHMACPathConfig(t *testing.T) {
	pem := newTestVerifier(t, Config{PublicKeyFiles: allKeys()})
	if pem.short != nil {
		t.Fatal("a short path without a secret")
	}
	if _, err := pem.Verify(hs256(t, jwt.MapClaims{"user_id": "a"})); err == nil {
		t.Fatal("an HS256 token verified without a secret")
	}
	v := newTestVerifier(t, Config{Secret: testSecret, Audience: "app", Issuer: "auth"})
	for _, tt := range []struct {
		payload string
		taken   bool
	}{
		{`{"user_id":"a","aud":"app","iss":"auth"}`, true},
		{`{"user_id":"a","aud":["x","app"],"iss":"auth"}`, true},
		{`{"user_id":"a","aud":"other","iss":"auth"}`, false},
		{`{"user_id":"a","aud":"app","iss":"other"}`, false},
		{`{"user_id":"a","aud":"app"}`, false},
	} {
		if taken := sameAsFull(t, v, signRaw(sha256.New, hs256Header, tt.payload)); taken != tt.taken {
			t.Errorf("%s: taken by the short path %v, want %v", tt.payload, taken, tt.taken)
		}
	}
}

// FuzzHMACPath compares the short path with the full parse on payloads
// signed under each header it takes, and on raw tokens.
func FuzzHMACPath(f *testing.F) {
	v := newTestVerifier(f, Config{Secret: testSecret, PublicKeyFiles: allKeys()})
	for _, p := range []string{
		`{"user_id":"alice"}`, `{"user_id":1e3,"topics":["a",""],"exp":99999999999}`,
		` {"user_id" : "a" , "nbf":-1.5E+2, "x":[null,true,false,"s",0.0]} `, `{"user_id":"a","user_id":"b"}`,
		`{"user_id":"\u0061"}`, `{"user_id":"a"} {}`, `{}`, `[]`, `{"topics":[]}`, `{"exp":1e400}`,
	} {
		f.Add(uint8(0), p, "")
	}
	f.Add(uint8(1), `{"user_id":"a"}`, signRaw(sha256.New, hs256Header, `{"user_id":"a"}`)+"\n")
	f.Fuzz(func(t *testing.T, header uint8, payload, raw string) {
		alg := []struct {
			name string
			hash func() hash.Hash
		}{{"HS256", sha256.New}, {"HS384", sha512.New384}, {"HS512", sha512.New}}[header%3]
		h := strings.Replace(hmacHeaders[int(header/3)%len(hmacHeaders)], "%s", alg.name, 1)
		sameAsFull(t, v, signRaw(alg.hash, h, payload))
		if len(raw) <= maxTokenLen {
			sameAsFull(t, v, raw)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

package phxtoken

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/auth"
)

type badCase struct {
	name  string
	token string
	want  error
}

// signedAtMs is when the forged payloads claim to be signed: the clock of
// testVerifier is one second later.
var signedAtMs = testSignedAt.UnixMilli()

// badPayloads are well-signed payloads that are not a good message.
func badPayloads(t testing.TB) []badCase {
	t.Helper()
	ff := u32(0xffffffff)
	head := etf([]byte{tagSmallTuple, 3})     // a message tuple, its data next
	tailBytes := encodeBody(tInt(signedAtMs)) // then signed_at ...
	tailBytes = append(tailBytes, encodeBody(tInt(86400))...)
	inData := func(data ...[]byte) string { // raw data bytes in a message
		return sign(t, bytes.Join([][]byte{head, bytes.Join(data, nil), tailBytes}, nil))
	}
	m := func(tt term) string { return sign(t, encode(tt)) }
	return []badCase{
		{"payload not a tuple", m(tBin("alice")), auth.ErrMalformed},
		{"legacy 2-tuple", m(tTuple(tBin("alice"), tInt(signedAtMs))), auth.ErrMalformed},
		{"4-tuple", m(tTuple(tBin("alice"), tInt(signedAtMs), tInt(86400), tInt(0))), auth.ErrMalformed},
		{"legacy map", m(tMap(tAtom("data"), tBin("alice"), tAtom("signed"), tInt(signedAtMs))), auth.ErrMalformed},
		{"list payload", m(tList(tBin("alice"), tInt(signedAtMs), tInt(86400))), auth.ErrMalformed},
		{"signed_at binary", m(tTuple(tBin("alice"), tBin("now"), tInt(86400))), auth.ErrMalformed},
		{"signed_at float", m(tTuple(tBin("alice"), tFloat(float64(signedAtMs)), tInt(86400))), auth.ErrMalformed},
		{"signed_at beyond int64", m(tTuple(tBin("alice"), tBig("99999999999999999999"), tInt(86400))), auth.ErrMalformed},
		{"max_age atom", m(tTuple(tBin("alice"), tInt(signedAtMs), tAtom("forever"))), auth.ErrMalformed},
		{"max_age binary", m(tTuple(tBin("alice"), tInt(signedAtMs), tBin("86400"))), auth.ErrMalformed},
		{"max_age float", m(tTuple(tBin("alice"), tInt(signedAtMs), tFloat(86400.5))), nil},
		{"binary length 0xFFFFFFFF", inData([]byte{tagBinary}, ff), auth.ErrMalformed},
		{"map arity 0xFFFFFFFF", inData([]byte{tagMap}, ff), auth.ErrMalformed},
		{"large tuple arity 0xFFFFFFFF", inData([]byte{tagLargeTuple}, ff), auth.ErrMalformed},
		{"list length 0xFFFFFFFF", inData([]byte{tagList}, ff), auth.ErrMalformed},
		{"atom length 0xFFFF", inData([]byte{tagAtom, 0xff, 0xff}), auth.ErrMalformed},
		{"big of 255 bytes", inData([]byte{tagSmallBig, 0xff, 0}, make([]byte, 255)), auth.ErrMalformed},
		{"depth 33", m(tTuple(nested(33), tInt(signedAtMs), tInt(86400))), auth.ErrMalformed},
		{"depth 31 data", m(tTuple(nested(31), tInt(signedAtMs), tInt(86400))), auth.ErrUserClaim},
		{"compressed", sign(t, etf([]byte{tagCompressed}, u32(30), []byte{0x78, 0x9c, 0, 0})), auth.ErrMalformed},
		{"trailing byte", sign(t, append(message(tBin("alice"), signedAtMs), tagNil)), auth.ErrMalformed},
		{"version 130", sign(t, append([]byte{130}, message(tBin("alice"), signedAtMs)[1:]...)), auth.ErrMalformed},
		{"empty payload", sign(t, nil), auth.ErrMalformed},
		{"pid data", inData([]byte{88, tagSmallAtomUTF8, 1, 'n', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}), auth.ErrMalformed},
		{"map id as atom value", m(tTuple(tMap(tAtom("id"), tAtom("bob")), tInt(signedAtMs), tInt(86400))), auth.ErrUserClaim},
		{"map id float", m(tTuple(tMap(tBin("user_id"), tFloat(1)), tInt(signedAtMs), tInt(86400))), auth.ErrUserClaim},
		{"map key charlist", m(tTuple(tMap(term{kind: kindString, s: "id"}, tInt(1)), tInt(signedAtMs), tInt(86400))), auth.ErrUserClaim},
		{"map id twice", m(tTuple(tMap(tAtom("id"), tInt(1), tBin("id"), tInt(2)), tInt(signedAtMs), tInt(86400))), auth.ErrUserClaim},
		{"bad user_id beats good id", m(tTuple(tMap(tAtom("user_id"), tBin(" "), tAtom("id"), tInt(2)), tInt(signedAtMs), tInt(86400))), auth.ErrUserClaim},
		{"latin-1 atom key", inData([]byte{tagMap}, u32(1), []byte{tagAtom, 0, 2, 'i', 'd', tagSmallInt, 9}), nil},
	}
}

// badEnvelopes are tokens refused before their payload is read.
func badEnvelopes(t testing.TB) []badCase {
	t.Helper()
	good := vectorNamed(t, "binary").Token
	h, p, s := cutParts(t, good)
	zeroSig := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	shortSig := base64.RawURLEncoding.EncodeToString(make([]byte, 31))
	other := func(secret, salt string) string {
		return signWith(testKey(t, secret, salt), payloadOf(t, good))
	}
	return []badCase{
		{"wrong signature", h + "." + p + "." + zeroSig, auth.ErrSignature},
		{"short signature", h + "." + p + "." + shortSig, auth.ErrSignature},
		{"empty signature", h + "." + p + ".", auth.ErrSignature},
		{"signature of other payload", h + "." + p + "." + strings.Split(vectorNamed(t, "integer").Token, ".")[2], auth.ErrSignature},
		{"payload changed", h + "." + p[:10] + flip(p[10]) + p[11:] + "." + s, auth.ErrSignature},
		{"wrong salt", other(testSecret, "user auth"), auth.ErrSignature},
		{"wrong secret", other(strings.Replace(testSecret, "J", "K", 1), DefaultSalt), auth.ErrSignature},
		{"empty", "", auth.ErrMalformed},
		{"header only", "SFMyNTY", auth.ErrMalformed},
		{"two parts", h + "." + p, auth.ErrMalformed},
		{"four parts", good + ".x", auth.ErrMalformed},
		{"HS384 header", "SFMzODQ." + p + "." + s, auth.ErrMalformed},
		{"JWT", "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYSJ9." + s, auth.ErrMalformed},
		{"padded payload", h + "." + p + "==." + s, auth.ErrMalformed},
		{"padded signature", h + "." + p + "." + s + "=", auth.ErrMalformed},
		{"standard alphabet", h + "." + p + "." + strings.NewReplacer("-", "+", "_", "/").Replace(s) + "+", auth.ErrMalformed},
		{"newline in signature", h + "." + p + "." + s[:10] + "\n" + s[10:], auth.ErrMalformed},
		{"non-canonical signature", h + "." + p + "." + nonCanonical(s), auth.ErrMalformed},
		{"impossible length", h + "." + p + "." + s + "AB", auth.ErrMalformed},
		{"33-byte signature", h + "." + p + "." + s + "A", auth.ErrSignature},
		{"space", " " + good, auth.ErrMalformed},
		{"too large", h + "." + strings.Repeat("A", maxTokenLen) + "." + s, auth.ErrMalformed},
	}
}

// flip returns another base64url character.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// nonCanonical changes the unused low bits of an unpadded base64 string's
// last character: the same bytes, spelled another way.
func nonCanonical(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i^1])
}

func TestBadTokens(t *testing.T) {
	v := testVerifier(t)
	for _, tc := range append(badEnvelopes(t), badPayloads(t)...) {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token)
			if tc.want == nil {
				if err != nil || c.UserID == "" {
					t.Fatalf("Verify = %+v, %v; want accepted", c, err)
				}
				return
			}
			checkKind(t, err, tc.want)
			if strings.Contains(err.Error(), "alice") || !strings.HasPrefix(err.Error(), "phoenix token ") {
				t.Errorf("message %q: want fixed text", err)
			}
		})
	}
}

// TestTruncated: every prefix of a good token, and every prefix of its
// payload signed again, is refused.
func TestTruncated(t *testing.T) {
	v := testVerifier(t)
	vec := vectorNamed(t, "map with other keys")
	if _, err := v.Verify(vec.Token); err != nil {
		t.Fatal(err)
	}
	for i := range len(vec.Token) {
		if _, err := v.Verify(vec.Token[:i]); err == nil {
			t.Fatalf("prefix of %d bytes accepted", i)
		} else if !isKnownKind(err) {
			t.Fatalf("prefix of %d bytes: %v matches no kind", i, err)
		}
	}
	payload := payloadOf(t, vec.Token)
	for i := range len(payload) {
		_, err := v.Verify(sign(t, payload[:i]))
		checkKind(t, err, auth.ErrMalformed)
	}
}

func isKnownKind(err error) bool {
	for _, k := range kinds {
		if errors.Is(err, k) && errors.Is(err, auth.ErrInvalidToken) {
			return true
		}
	}
	return false
}

// TestVerifyRealClock: New's clock is the real one.
func TestVerifyRealClock(t *testing.T) {
	v, err := New(Config{SecretKeyBase: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(sign(t, message(tBin("alice"), time.Now().UnixMilli())))
	if err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	if time.Since(testSignedAt) > DefaultMaxAge+futureSkew {
		_, err = v.Verify(vectorNamed(t, "binary").Token)
		checkKind(t, err, auth.ErrExpired)
	}
}

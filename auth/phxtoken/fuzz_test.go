package phxtoken

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// verifyMessages is every text a Verify error may have: fixed wording, so
// no token content can reach a client.
func verifyMessages() map[string]bool {
	m := map[string]bool{}
	for _, err := range []error{
		errTooLarge, errParts, errHeader, errBase64, errSignature, errExpired, errFuture,
		errNotMessage, errSignedAt, errMaxAge, errDataType, errNoID, errAmbiguousID,
		errIDType, errIDEmpty, errIDTooLong, errIDNotUTF8,
	} {
		m[err.Error()] = true
	}
	for _, err := range []error{
		errTruncated, errVersion, errCompressed, errTag, errDepth, errLength,
		errBigInt, errBigSign, errAtom, errTrailing,
	} {
		m[malformed(err.Error()).Error()] = true
	}
	return m
}

// checkResult fails unless Verify either refused with a known kind and a
// fixed message or returned sensible claims.
func checkResult(t *testing.T, messages map[string]bool, c Claims, err error) {
	t.Helper()
	if err != nil {
		if !isKnownKind(err) {
			t.Fatalf("error %q matches no kind", err)
		}
		if !messages[err.Error()] {
			t.Fatalf("error %q is not a fixed message", err)
		}
		return
	}
	if strings.TrimSpace(c.UserID) == "" || len(c.UserID) > maxUserIDLen || !utf8.ValidString(c.UserID) {
		t.Fatalf("accepted user id %q", c.UserID)
	}
	if !c.ExpiresAt.Equal(c.SignedAt.Add(DefaultMaxAge)) {
		t.Fatalf("accepted signed %v, expires %v", c.SignedAt, c.ExpiresAt)
	}
	if now := testSignedAt.Add(time.Second); c.SignedAt.After(now.Add(futureSkew)) || c.ExpiresAt.Before(now) {
		t.Fatalf("accepted signed %v, expires %v at %v", c.SignedAt, c.ExpiresAt, now)
	}
}

// FuzzVerify: no input panics. Each input is tried as a token and, signed,
// as a payload: a mutated signature never reaches the term decoder.
func FuzzVerify(f *testing.F) {
	v := testVerifier(f)
	for _, tc := range append(badEnvelopes(f), badPayloads(f)...) {
		f.Add(tc.token)
	}
	f.Add(string(message(tMap(tAtom("user_id"), tBin("alice")), signedAtMs)))
	f.Add(string(message(tList(tInt(1), tFloat(2)), signedAtMs)))
	key := testKey(f, testSecret, DefaultSalt)
	messages := verifyMessages()
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s)
		checkResult(t, messages, c, err)
		c, err = v.Verify(signWith(key, []byte(s)))
		checkResult(t, messages, c, err)
		if Looks(s) != strings.HasPrefix(s, "SFMyNTY.") {
			t.Fatalf("Looks(%q) wrong", s)
		}
	})
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/*/vector_* from the vectors
// when PHXTOKEN_WRITE_SEEDS=1 (after regenerating testdata/vectors.json).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PHXTOKEN_WRITE_SEEDS") != "1" {
		t.Skip("set PHXTOKEN_WRITE_SEEDS=1 to rewrite the fuzz seeds from testdata/vectors.json")
	}
	for _, name := range []string{"FuzzVerify", "FuzzDecodeTerm"} {
		old, _ := filepath.Glob(filepath.Join("testdata", "fuzz", name, "vector_*"))
		for _, p := range old {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, vec := range loadVectors(t) {
		file := "vector_" + strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
				return r
			}
			return '_'
		}, strings.ToLower(vec.Name))
		writeSeed(t, "FuzzVerify", file, fmt.Sprintf("string(%q)", vec.Token))
		writeSeed(t, "FuzzDecodeTerm", file, fmt.Sprintf("[]byte(%q)", payloadOf(t, vec.Token)))
	}
}

func writeSeed(t *testing.T, target, file, value string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := "go test fuzz v1\n" + value + "\n"
	if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

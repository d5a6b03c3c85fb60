package phxtoken

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/auth"
)

// checkVectors verifies each vector at now: the expected user id, or an
// error of the expected kind.
func checkVectors(t *testing.T, vs []vector, now func(vector) time.Time) {
	t.Helper()
	for _, vec := range vs {
		t.Run(vec.Name, func(t *testing.T) {
			v := newVerifier(t, Config{SecretKeyBase: vec.Secret, Salt: vec.Salt}, now(vec))
			got, err := v.Verify(vec.Token)
			if vec.Error != "" {
				kind, ok := kinds[vec.Error]
				if !ok {
					t.Fatalf("vector error %q is no kind", vec.Error)
				}
				checkKind(t, err, kind)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			signed := time.UnixMilli(vec.SignedAtMs)
			want := Claims{UserID: vec.UserID, SignedAt: signed, ExpiresAt: signed.Add(DefaultMaxAge)}
			if got != want {
				t.Errorf("Verify = %+v; want %+v", got, want)
			}
		})
	}
}

// TestVectors verifies the committed tokens Erlang made.
func TestVectors(t *testing.T) {
	checkVectors(t, loadVectors(t), func(v vector) time.Time {
		return time.UnixMilli(v.SignedAtMs).Add(time.Second)
	})
}

// TestSignMatchesErlang: the tests' signer (and so the key derivation) is
// Erlang's, byte for byte, so the tokens the other tests forge are real.
func TestSignMatchesErlang(t *testing.T) {
	for _, vec := range loadVectors(t) {
		got := signWith(testKey(t, vec.Secret, vec.Salt), payloadOf(t, vec.Token))
		if got != vec.Token {
			t.Errorf("%s: signed %q; Erlang signed %q", vec.Name, got, vec.Token)
		}
	}
}

// TestErlangLive signs fresh tokens with erl, now, and verifies them on the
// real clock, so the committed vectors cannot drift from what Erlang does.
func TestErlangLive(t *testing.T) {
	if _, err := exec.LookPath("erl"); err != nil {
		t.Skip("erl not on PATH (Debian: apt-get install erlang-base): fresh Erlang tokens not checked")
	}
	escript, err := exec.LookPath("escript")
	if err != nil {
		t.Skip("escript not on PATH: fresh Erlang tokens not checked")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, escript, "testdata/vectors.escript", "now")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("escript: %v\n%s", err, stderr.String())
	}
	fresh := parseVectors(t, out)
	committed := loadVectors(t)
	if len(fresh) != len(committed) {
		t.Fatalf("escript made %d vectors, testdata/vectors.json has %d: regenerate it", len(fresh), len(committed))
	}
	for i, f := range fresh {
		c := committed[i]
		if f.Name != c.Name || f.UserID != c.UserID || f.Error != c.Error {
			t.Errorf("vector %d: escript says %s/%q/%q, testdata/vectors.json %s/%q/%q: regenerate it",
				i, f.Name, f.UserID, f.Error, c.Name, c.UserID, c.Error)
		}
	}
	for _, vec := range fresh {
		if d := time.Since(time.UnixMilli(vec.SignedAtMs)); d < -futureSkew || d > time.Minute {
			t.Fatalf("%s: signed %v from now", vec.Name, d)
		}
	}
	checkVectors(t, fresh, func(vector) time.Time { return time.Now() })
}

// TestTimes: the limits of Plug.Crypto's validate_age/2, to the
// millisecond, and the allowance for a signer's clock running ahead.
func TestTimes(t *testing.T) {
	vec := vectorNamed(t, "binary")
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
		offset time.Duration // now - signed_at
		want   error         // nil: accepted
	}{
		{"just signed", 0, 0, nil},
		{"at max age", 0, DefaultMaxAge, nil},
		{"1ms past max age", 0, DefaultMaxAge + time.Millisecond, auth.ErrExpired},
		{"a year past", 0, 365 * 24 * time.Hour, auth.ErrExpired},
		{"configured max age shorter", time.Hour, time.Hour + time.Millisecond, auth.ErrExpired},
		{"configured max age longer", 48 * time.Hour, 47 * time.Hour, nil},
		{"signed within skew", 0, -futureSkew, nil},
		{"signed beyond skew", 0, -futureSkew - time.Millisecond, auth.ErrNotValidYet},
		{"signed a day ahead", 0, -24 * time.Hour, auth.ErrNotValidYet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{SecretKeyBase: vec.Secret, MaxAge: tc.maxAge}
			v := newVerifier(t, cfg, time.UnixMilli(vec.SignedAtMs).Add(tc.offset))
			c, err := v.Verify(vec.Token)
			if tc.want != nil {
				checkKind(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			maxAge := tc.maxAge
			if maxAge == 0 {
				maxAge = DefaultMaxAge
			}
			if !c.ExpiresAt.Equal(c.SignedAt.Add(maxAge)) {
				t.Errorf("expires %v, signed %v; want max age %v", c.ExpiresAt, c.SignedAt, maxAge)
			}
		})
	}
}

// TestEmbeddedMaxAgeOverridden: the configured MaxAge replaces the token's
// own, as Plug.Crypto.verify/4 with :max_age does (Keyword.get(opts,
// :max_age, max_age)): a token signed with max_age: 60 is good for a day.
func TestEmbeddedMaxAgeOverridden(t *testing.T) {
	vec := vectorNamed(t, "max_age 60 overridden")
	v := newVerifier(t, Config{SecretKeyBase: vec.Secret}, time.UnixMilli(vec.SignedAtMs).Add(time.Hour))
	if _, err := v.Verify(vec.Token); err != nil {
		t.Fatalf("Verify an hour after signing: %v", err)
	}
	v = newVerifier(t, Config{SecretKeyBase: vec.Secret, MaxAge: 30 * time.Second}, time.UnixMilli(vec.SignedAtMs).Add(31*time.Second))
	_, err := v.Verify(vec.Token)
	checkKind(t, err, auth.ErrExpired)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"defaults", Config{SecretKeyBase: testSecret}, ""},
		{"all set", Config{SecretKeyBase: testSecret, Salt: "user auth", MaxAge: time.Hour}, ""},
		{"20-byte secret", Config{SecretKeyBase: strings.Repeat("s", 20)}, ""},
		{"no secret", Config{}, "must not be empty"},
		{"19-byte secret", Config{SecretKeyBase: strings.Repeat("s", 19)}, "at least 20 bytes"},
		{"negative max age", Config{SecretKeyBase: testSecret, MaxAge: -time.Second}, "at least 1s"},
		{"sub-second max age", Config{SecretKeyBase: testSecret, MaxAge: time.Millisecond}, "at least 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			_, newErr := New(tc.cfg)
			if tc.want == "" {
				if err != nil || newErr != nil {
					t.Fatalf("Validate = %v, New = %v; want valid", err, newErr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v; want %q", err, tc.want)
			}
			if newErr == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestLooks(t *testing.T) {
	for tok, want := range map[string]bool{
		vectorNamed(t, "binary").Token: true,
		"SFMyNTY.":                     true,
		"SFMyNTY":                      false,
		"SFMzODQ.a.b":                  false,
		"eyJhbGciOiJIUzI1NiJ9.e30.x":   false,
		"":                             false,
	} {
		if got := Looks(tok); got != want {
			t.Errorf("Looks(%.20q) = %v; want %v", tok, got, want)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	vec := vectorNamed(b, "map atom user_id binary")
	v := newVerifier(b, Config{SecretKeyBase: vec.Secret}, time.UnixMilli(vec.SignedAtMs))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(vec.Token); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSignVerifies: Sign makes what Verify takes, and what the Erlang
// vectors hold for the same inputs.
func TestSignVerifies(t *testing.T) {
	now := time.Now()
	v := newVerifier(t, Config{SecretKeyBase: strings.Repeat("s", 64)}, now)
	c, err := v.Verify(v.Sign("user-7", now.Add(-time.Minute)))
	if err != nil || c.UserID != "user-7" || !c.SignedAt.Equal(time.UnixMilli(now.Add(-time.Minute).UnixMilli())) {
		t.Fatalf("Verify(Sign) = %+v, %v", c, err)
	}
}

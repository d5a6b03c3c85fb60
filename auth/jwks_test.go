package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notify-dev/notify/internal/await"
)

// jwksCase is a token and what verifying it through a JWK Set must give:
// nil for alice's claims, else an error of that kind and message.
type jwksCase struct {
	name    string
	token   string
	wantErr error
	wantMsg string
}

func TestJWKSVerify(t *testing.T) {
	k := loadJWKSKeys(t)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	srv := newJWKSServer(t,
		rsaJWK("rsa", "RS256", k.rsaPub()),
		rsaJWK("rsa-any", "", k.rsa2Pub()),
		ecJWK(t, "ec", "ES256", k.ecPub()),
		edJWK("ed", "EdDSA", k.edPub()),
		withMeta(map[string]any{"kty": "RSA", "use": "enc", "n": b64u(k.rsaPub().N.Bytes()), "e": "AQAB"}, "enc", ""),
		rsaJWK("weak", "RS256", &weak.PublicKey),
	)
	jv := startJWKS(t, Config{JWKSURLs: []string{srv.url()}}, fastJWKS)
	jv.awaitFetched(t, 1, 0)

	for _, tt := range jwksCases(t, k, weak) {
		t.Run(tt.name, func(t *testing.T) {
			_, err := jv.Verify(tt.token)
			checkJWKSResult(t, err, tt)
		})
	}
	if !jv.logsContain(`"msg":"JWKS key skipped"`, `"kid":"weak"`, `"err":"RSA key has 1024 bits`) {
		t.Errorf("no log line for the weak key skipped; logs:\n%s", jv.logs)
	}
	if n := testutil.ToFloat64(jv.jwks.metrics.keys); n != 4 {
		t.Errorf("notify_jwks_keys = %v, want 4", n)
	}
}

func jwksCases(t *testing.T, k jwksKeys, weak *rsa.PrivateKey) []jwksCase {
	return []jwksCase{
		{name: "RS256 by kid", token: signKid(t, jwt.SigningMethodRS256, k.rsa, "rsa")},
		{name: "ES256 by kid", token: signKid(t, jwt.SigningMethodES256, k.ec, "ec")},
		{name: "EdDSA by kid", token: signKid(t, jwt.SigningMethodEdDSA, k.ed, "ed")},
		{name: "key without alg verifies RS256", token: signKid(t, jwt.SigningMethodRS256, k.rsa2, "rsa-any")},
		{name: "key without alg verifies PS384", token: signKid(t, jwt.SigningMethodPS384, k.rsa2, "rsa-any")},
		{name: "no kid tries every RSA key", token: signKid(t, jwt.SigningMethodRS256, k.rsa2, "")},
		{name: "no kid ES256", token: signKid(t, jwt.SigningMethodES256, k.ec, "")},
		{name: "no kid EdDSA", token: signKid(t, jwt.SigningMethodEdDSA, k.ed, "")},
		{
			name: "kid names exactly one key", token: signKid(t, jwt.SigningMethodRS256, k.rsa2, "rsa"),
			wantErr: ErrSignature, wantMsg: "token signature invalid",
		},
		{
			name: "alg differs from the key's", token: signKid(t, jwt.SigningMethodPS256, k.rsa, "rsa"),
			wantErr: ErrAlgorithm, wantMsg: "token algorithm does not fit the key its kid names",
		},
		{
			name: "RS512 on an RS256 key", token: signKid(t, jwt.SigningMethodRS512, k.rsa, "rsa"),
			wantErr: ErrAlgorithm,
		},
		{
			name: "kid of another family", token: signKid(t, jwt.SigningMethodRS256, k.rsa, "ec"),
			wantErr: ErrAlgorithm,
		},
		{
			name: "no kid, alg the keys do not allow", token: signKid(t, jwt.SigningMethodPS256, k.rsa, ""),
			wantErr: ErrSignature,
		},
		{
			name: "unknown kid", token: signKid(t, jwt.SigningMethodRS256, k.rsa, "nope-not-a-kid"),
			wantErr: ErrSignature, wantMsg: "token key id unknown",
		},
		{
			name: "encryption key is no signature key", token: signKid(t, jwt.SigningMethodRS256, k.rsa, "enc"),
			wantErr: ErrSignature, wantMsg: "token key id unknown",
		},
		{
			name: "weak key was skipped", token: signKid(t, jwt.SigningMethodRS256, weak, "weak"),
			wantErr: ErrSignature, wantMsg: "token key id unknown",
		},
		{
			name: "HS256 without a secret", token: hs256(t, jwt.MapClaims{"user_id": "alice"}),
			wantErr: ErrAlgorithm,
		},
		{
			name: "kid not a string", token: rawSignedRS256(t, k, `{"alg":"RS256","kid":7}`),
			wantErr: ErrMalformed, wantMsg: "token key id malformed",
		},
	}
}

// rawSignedRS256 signs alice's claims under an exact header text.
func rawSignedRS256(t *testing.T, k jwksKeys, header string) string {
	t.Helper()
	signing := b64(header) + "." + b64(`{"user_id":"alice"}`)
	sig, err := jwt.SigningMethodRS256.Sign(signing, k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64u(sig)
}

// checkJWKSResult checks err against what tt wants, and that no token text
// leaks into it.
func checkJWKSResult(t *testing.T, err error, tt jwksCase) {
	t.Helper()
	if tt.wantErr == nil {
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		return
	}
	if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify error = %v, want %v (and ErrInvalidToken)", err, tt.wantErr)
	}
	if tt.wantMsg != "" && err.Error() != tt.wantMsg {
		t.Errorf("Verify error = %q, want %q", err, tt.wantMsg)
	}
	assertNoTokenText(t, err.Error(), tt.token)
}

// TestJWKSRotation: the issuer swaps its key. A token with the new kid is
// refused at once (verification does not wait on the network), asks for a
// refresh that comes no sooner than the rate limit allows however many
// tokens ask, and then verifies; the old key's tokens fail.
func TestJWKSRotation(t *testing.T) {
	k := loadJWKSKeys(t)
	srv := newJWKSServer(t, rsaJWK("2030-01", "RS256", k.rsaPub()))
	tune := jwksTuning{minInterval: 300 * time.Millisecond, timeout: 2 * time.Second}
	jv := startJWKS(t, Config{JWKSURLs: []string{srv.url()}}, tune)
	jv.awaitFetched(t, 1, 0)
	oldTok := signKid(t, jwt.SigningMethodRS256, k.rsa, "2030-01")
	jv.mustVerify(t, oldTok)

	srv.setKeys(t, rsaJWK("2030-02", "RS256", k.rsa2Pub()))
	newTok := signKid(t, jwt.SigningMethodRS256, k.rsa2, "2030-02")
	// Nothing but this token asks for a refresh (the schedule is minutes
	// away), so the first attempt always comes before it.
	_, err := jv.Verify(newTok)
	checkJWKSResult(t, err, jwksCase{token: newTok, wantErr: ErrSignature, wantMsg: "token key id unknown"})
	for range 100 {
		_, _ = jv.Verify(newTok) // each asks again; one fetch follows
	}
	await.True(t, "the new key verifying", func() bool { _, err := jv.Verify(newTok); return err == nil })
	_, err = jv.Verify(oldTok)
	checkJWKSResult(t, err, jwksCase{token: oldTok, wantErr: ErrSignature, wantMsg: "token key id unknown"})

	// The old token asked for a refresh too: wait for it, then check that no
	// two fetches came close; without the limit, the tokens above would
	// have made them milliseconds apart. The server sees a fetch some time
	// after it began, which varies under -race: hence the slack.
	await.True(t, "the third fetch", func() bool { return len(srv.fetchTimes()) >= 3 })
	times := srv.fetchTimes()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < tune.minInterval/2 {
			t.Errorf("fetch %d came %v after the previous one, want about %v", i, gap, tune.minInterval)
		}
	}
}

// TestJWKSRefreshFailureKeepsKeys: whatever goes wrong with a refresh, the
// last good keys stay in use, and the failure is counted and logged.
func TestJWKSRefreshFailureKeepsKeys(t *testing.T) {
	tests := []struct {
		name    string
		mode    serveMode
		timeout time.Duration
		wantLog string
	}{
		{"status 500", serve500, 10 * time.Second, "status 500 Internal Server Error"},
		{"not JSON", serveGarbage, 10 * time.Second, "decode JWK Set"},
		{"no usable key", serveNoKeys, 10 * time.Second, "no usable signature key among 2"},
		{"larger than the limit", serveTooLarge, 10 * time.Second, "document larger than 1048576 bytes"},
		{"hangs beyond the timeout", serveHang, 200 * time.Millisecond, "context deadline exceeded"},
	}
	k := loadJWKSKeys(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t, rsaJWK("a", "RS256", k.rsaPub()))
			tune := jwksTuning{minInterval: 20 * time.Millisecond, timeout: tt.timeout}
			jv := startJWKS(t, Config{JWKSURLs: []string{srv.url()}}, tune)
			jv.awaitFetched(t, 1, 0)
			tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")

			srv.setMode(tt.mode)
			// An unknown kid asks for the refresh that fails.
			_, _ = jv.Verify(signKid(t, jwt.SigningMethodRS256, k.rsa2, "b"))
			jv.awaitFetched(t, 1, 1)
			jv.mustVerify(t, tok)
			if n := testutil.ToFloat64(jv.jwks.metrics.keys); n != 1 {
				t.Errorf("notify_jwks_keys = %v, want 1", n)
			}
			if !jv.logsContain(`"msg":"JWKS refresh failed; keeping the last good keys"`, `"err":"`, tt.wantLog) {
				t.Errorf("no refresh failure logged with err %q; logs:\n%s", tt.wantLog, jv.logs)
			}
		})
	}
}

// TestJWKSNeverFetched: without a single fetched document, tokens that
// need JWKS keys are refused with a clear message; a secret still works.
func TestJWKSNeverFetched(t *testing.T) {
	k := loadJWKSKeys(t)
	down := newJWKSServer(t)
	down.setMode(serve500)
	closed := newJWKSServer(t)
	closedURL := closed.url()
	closed.srv.Close()

	tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")
	noKid := signKid(t, jwt.SigningMethodES256, k.ec, "")
	for _, url := range []string{down.url(), closedURL} {
		jv := startJWKS(t, Config{Secret: testSecret, JWKSURLs: []string{url}}, fastJWKS)
		jv.awaitFetched(t, 0, 2) // the first fetch and a retry
		for _, token := range []string{tok, noKid} {
			_, err := jv.Verify(token)
			checkJWKSResult(t, err, jwksCase{token: token, wantErr: ErrSignature, wantMsg: "no JWKS keys fetched yet"})
		}
		jv.mustVerify(t, hs256(t, jwt.MapClaims{"user_id": "alice"}))
		if n := testutil.ToFloat64(jv.jwks.metrics.lastSuccess); n != 0 {
			t.Errorf("notify_jwks_last_success_timestamp_seconds = %v, want 0", n)
		}
	}

	// Never run at all: the same refusal.
	jv := newJWKSVerifier(t, Config{JWKSURLs: []string{down.url()}}, fastJWKS)
	_, err := jv.Verify(tok)
	checkJWKSResult(t, err, jwksCase{token: tok, wantErr: ErrSignature, wantMsg: "no JWKS keys fetched yet"})
}

// TestJWKSTwoURLs: the keys of both documents verify, and each document
// keeps its last good keys when only it fails.
func TestJWKSTwoURLs(t *testing.T) {
	k := loadJWKSKeys(t)
	a := newJWKSServer(t, rsaJWK("a", "RS256", k.rsaPub()))
	b := newJWKSServer(t, ecJWK(t, "b", "ES256", k.ecPub()), edJWK("", "", k.edPub()))
	jv := startJWKS(t, Config{JWKSURLs: []string{a.url(), b.url()}}, fastJWKS)
	jv.awaitFetched(t, 2, 0)
	tokens := []string{
		signKid(t, jwt.SigningMethodRS256, k.rsa, "a"),
		signKid(t, jwt.SigningMethodES256, k.ec, "b"),
		signKid(t, jwt.SigningMethodEdDSA, k.ed, ""),
		// A key without kid serves tokens whose kid is unknown.
		signKid(t, jwt.SigningMethodEdDSA, k.ed, "whatever"),
	}
	for _, tok := range tokens {
		jv.mustVerify(t, tok)
	}
	if n := testutil.ToFloat64(jv.jwks.metrics.keys); n != 3 {
		t.Errorf("notify_jwks_keys = %v, want 3", n)
	}

	b.setMode(serve500)
	a.setKeys(t, rsaJWK("a", "RS256", k.rsaPub()), rsaJWK("a2", "RS256", k.rsa2Pub()))
	a2 := signKid(t, jwt.SigningMethodRS256, k.rsa2, "a2")
	await.True(t, "a's new key verifying", func() bool { _, err := jv.Verify(a2); return err == nil })
	for _, tok := range tokens {
		jv.mustVerify(t, tok)
	}
	if ok, failed := jv.fetched(); ok < 3 || failed < 1 {
		t.Errorf("fetches ok %d, failed %d; want at least 3 and 1", ok, failed)
	}
}

// TestJWKSWithPEMAndSecret: PEM keys, JWKS keys and the secret all verify
// in one verifier; a PEM key has no kid, so a token whose kid the JWK Set
// does not know still reaches it.
func TestJWKSWithPEMAndSecret(t *testing.T) {
	k := loadJWKSKeys(t)
	srv := newJWKSServer(t, rsaJWK("a", "RS256", k.rsaPub()))
	cfg := Config{Secret: testSecret, PublicKeyFiles: []string{testdataPath("ecdsa_public.pem")}, JWKSURLs: []string{srv.url()}}
	jv := startJWKS(t, cfg, fastJWKS)
	jv.awaitFetched(t, 1, 0)
	for _, tok := range []string{
		signKid(t, jwt.SigningMethodRS256, k.rsa, "a"),
		signKid(t, jwt.SigningMethodES256, k.ec, ""),
		signKid(t, jwt.SigningMethodES256, k.ec, "pem-key"),
		hs256(t, jwt.MapClaims{"user_id": "alice"}),
	} {
		jv.mustVerify(t, tok)
	}
}

// TestJWKSMetrics: the metrics are registered under their names, and the
// last success is stamped.
func TestJWKSMetrics(t *testing.T) {
	k := loadJWKSKeys(t)
	srv := newJWKSServer(t, rsaJWK("a", "RS256", k.rsaPub()))
	before := time.Now()
	jv := startJWKS(t, Config{JWKSURLs: []string{srv.url()}}, fastJWKS)
	jv.awaitFetched(t, 1, 0)
	names := []string{"notify_jwks_refreshes_total", "notify_jwks_keys", "notify_jwks_last_success_timestamp_seconds"}
	n, err := testutil.GatherAndCount(jv.reg, names...)
	if err != nil || n != 4 { // refreshes_total has two series: ok and error
		t.Errorf("GatherAndCount(%v) = %d, %v; want 4 series", names, n, err)
	}
	last := testutil.ToFloat64(jv.jwks.metrics.lastSuccess)
	if got := time.Unix(0, int64(last*1e9)); got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("last success %v, want between %v and now", got, before)
	}
}

// TestJWKSService: without URLs the service only waits for its context;
// with them, Run runs once.
func TestJWKSService(t *testing.T) {
	v := newTestVerifier(t, Config{Secret: testSecret})
	if v.jwks != nil {
		t.Fatal("a verifier without NOTIFY_JWKS_URL has a JWK Set")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := v.Service().Run(ctx); err != nil {
		t.Errorf("idle Service Run = %v, want nil", err)
	}

	srv := newJWKSServer(t, rsaJWK("a", "RS256", loadJWKSKeys(t).rsaPub()))
	jv := startJWKS(t, Config{JWKSURLs: []string{srv.url()}}, fastJWKS)
	jv.awaitFetched(t, 1, 0) // the first Run is running
	if err := jv.Service().Run(ctx); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run = %v, want an error", err)
	}
}

// TestJWKSOnlyConfig: a JWK Set alone is a complete configuration, and it
// allows every asymmetric algorithm (each key then picks its own).
func TestJWKSOnlyConfig(t *testing.T) {
	v := newTestVerifier(t, Config{JWKSURLs: []string{"https://idp.example/jwks.json"}})
	var got []string
	for m := range v.allowed {
		got = append(got, m)
	}
	slices.Sort(got)
	want := []string{"ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}
	if !slices.Equal(got, want) {
		t.Errorf("allowed = %v, want %v", got, want)
	}
}

// TestJWKSOverTLS: a JWK Set over https verifies; a redirect from it to
// plain http is refused.
func TestJWKSOverTLS(t *testing.T) {
	k := loadJWKSKeys(t)
	plain := newJWKSServer(t, rsaJWK("a", "RS256", k.rsaPub()))
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, plain.url(), http.StatusFound)
			return
		}
		_, _ = w.Write(plainDoc(plain))
	}))
	t.Cleanup(tlsSrv.Close)
	trust := tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig

	for _, tt := range []struct {
		path    string
		wantErr string // empty: the key verifies
	}{
		{path: "/jwks.json"},
		{path: "/moved", wantErr: "redirect from https to http refused"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			jv := newJWKSVerifier(t, Config{JWKSURLs: []string{tlsSrv.URL + tt.path}}, fastJWKS)
			jv.jwks.transport.TLSClientConfig = trust.Clone()
			runJWKS(t, jv)
			tok := signKid(t, jwt.SigningMethodRS256, k.rsa, "a")
			if tt.wantErr == "" {
				jv.awaitFetched(t, 1, 0)
				jv.mustVerify(t, tok)
				return
			}
			jv.awaitFetched(t, 0, 1)
			if !jv.logsContain(`"err":"`, tt.wantErr) {
				t.Errorf("no log of %q; logs:\n%s", tt.wantErr, jv.logs)
			}
		})
	}
}

// plainDoc is the document plain serves.
func plainDoc(plain *jwksServer) []byte {
	plain.mu.Lock()
	defer plain.mu.Unlock()
	return plain.doc
}

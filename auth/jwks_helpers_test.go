package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notify-dev/notify/internal/await"
)

// serveMode is how a jwksServer answers.
type serveMode int

const (
	serveOK       serveMode = iota
	serve500                // 500 Internal Server Error
	serveGarbage            // 200 with a body that is no JSON
	serveNoKeys             // 200 with a set of no usable key
	serveTooLarge           // 200 with a valid set padded beyond maxJWKSBytes
	serveHang               // no answer until the client gives up
)

// jwksServer serves a JWK Set on loopback; tests swap its keys and make it
// fail.
type jwksServer struct {
	srv     *httptest.Server
	release chan struct{} // closed at cleanup: hanging requests end

	mu      sync.Mutex
	doc     []byte
	mode    serveMode
	fetches []time.Time // when each request arrived
}

func newJWKSServer(t testing.TB, keys ...map[string]any) *jwksServer {
	t.Helper()
	s := &jwksServer{release: make(chan struct{})}
	s.setKeys(t, keys...)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		close(s.release)
		s.srv.Close()
	})
	return s
}

func (s *jwksServer) url() string { return s.srv.URL + "/.well-known/jwks.json" }

func (s *jwksServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.fetches = append(s.fetches, time.Now())
	doc, mode := s.doc, s.mode
	s.mu.Unlock()
	switch mode {
	case serve500:
		http.Error(w, "boom", http.StatusInternalServerError)
	case serveGarbage:
		_, _ = w.Write([]byte("<html>not a key set</html>"))
	case serveNoKeys:
		_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}`))
	case serveTooLarge:
		_, _ = w.Write(append(bytes.Repeat([]byte(" "), maxJWKSBytes), doc...))
	case serveHang:
		select {
		case <-r.Context().Done():
		case <-s.release:
		}
	default:
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(doc)
	}
}

func (s *jwksServer) setKeys(t testing.TB, keys ...map[string]any) {
	t.Helper()
	doc, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.doc, s.mode = doc, serveOK
	s.mu.Unlock()
}

func (s *jwksServer) setMode(m serveMode) {
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
}

func (s *jwksServer) fetchTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.fetches...)
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// withMeta adds kid and alg (when not empty) to a JWK.
func withMeta(k map[string]any, kid, alg string) map[string]any {
	if kid != "" {
		k["kid"] = kid
	}
	if alg != "" {
		k["alg"] = alg
	}
	return k
}

func rsaJWK(kid, alg string, pub *rsa.PublicKey) map[string]any {
	e := big.NewInt(int64(pub.E)).Bytes()
	return withMeta(map[string]any{"kty": "RSA", "use": "sig", "n": b64u(pub.N.Bytes()), "e": b64u(e)}, kid, alg)
}

func ecJWK(t testing.TB, kid, alg string, pub *ecdsa.PublicKey) map[string]any {
	t.Helper()
	raw, err := pub.Bytes() // 0x04 || x || y, each at the curve's size
	if err != nil {
		t.Fatal(err)
	}
	size := (len(raw) - 1) / 2
	return withMeta(map[string]any{
		"kty": "EC", "crv": pub.Curve.Params().Name,
		"x": b64u(raw[1 : 1+size]), "y": b64u(raw[1+size:]),
	}, kid, alg)
}

func edJWK(kid, alg string, pub ed25519.PublicKey) map[string]any {
	return withMeta(map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64u(pub)}, kid, alg)
}

// jwksKeys are the test key pairs, private halves to sign, public halves
// for the JWK Sets.
type jwksKeys struct {
	rsa, rsa2, ec, ed crypto.Signer
}

func loadJWKSKeys(t testing.TB) jwksKeys {
	t.Helper()
	return jwksKeys{
		rsa:  privateKey(t, "rsa_private.pem"),
		rsa2: privateKey(t, "rsa2_private.pem"),
		ec:   privateKey(t, "ecdsa_private.pem"),
		ed:   privateKey(t, "ed25519_private.pem"),
	}
}

func (k jwksKeys) rsaPub() *rsa.PublicKey   { return k.rsa.Public().(*rsa.PublicKey) }
func (k jwksKeys) rsa2Pub() *rsa.PublicKey  { return k.rsa2.Public().(*rsa.PublicKey) }
func (k jwksKeys) ecPub() *ecdsa.PublicKey  { return k.ec.Public().(*ecdsa.PublicKey) }
func (k jwksKeys) edPub() ed25519.PublicKey { return k.ed.Public().(ed25519.PublicKey) }

// signKid signs a token for user alice, naming kid in its header when kid
// is not empty.
func signKid(t testing.TB, method jwt.SigningMethod, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, jwt.MapClaims{"user_id": "alice"})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// jwksVerifier is a verifier whose JWKS Run is running, with its metrics
// registry and log.
type jwksVerifier struct {
	*Verifier
	reg  *prometheus.Registry
	logs *syncBuffer
}

// jwksTuning shortens the delays that are seconds in production.
type jwksTuning struct {
	minInterval, timeout time.Duration
}

var fastJWKS = jwksTuning{minInterval: 50 * time.Millisecond, timeout: 2 * time.Second}

// startJWKS builds a verifier from cfg and runs its Service until the test
// ends, which waits for Run to return.
func startJWKS(t testing.TB, cfg Config, tune jwksTuning) *jwksVerifier {
	t.Helper()
	jv := newJWKSVerifier(t, cfg, tune)
	runJWKS(t, jv)
	return jv
}

// runJWKS runs jv's Service until the test ends, which waits for Run to
// return.
func runJWKS(t testing.TB, jv *jwksVerifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- jv.Service().Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// newJWKSVerifier builds a verifier on testNow without running it.
func newJWKSVerifier(t testing.TB, cfg Config, tune jwksTuning) *jwksVerifier {
	t.Helper()
	jv := &jwksVerifier{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(jv.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v, err := NewVerifier(cfg, WithRegisterer(jv.reg), WithLogger(log))
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	v.now = func() time.Time { return testNow }
	v.jwks.minInterval, v.jwks.timeout = tune.minInterval, tune.timeout
	jv.Verifier = v
	return jv
}

// fetched returns the counts of successful and failed document fetches.
func (jv *jwksVerifier) fetched() (ok, failed int) {
	return int(testutil.ToFloat64(jv.jwks.metrics.ok)), int(testutil.ToFloat64(jv.jwks.metrics.failed))
}

// awaitFetched waits until at least ok fetches succeeded and failed failed.
func (jv *jwksVerifier) awaitFetched(t testing.TB, ok, failed int) {
	t.Helper()
	await.True(t, "JWKS fetches", func() bool {
		o, f := jv.fetched()
		return o >= ok && f >= failed
	})
}

// mustVerify fails the test unless token verifies as alice.
func (jv *jwksVerifier) mustVerify(t testing.TB, token string) {
	t.Helper()
	c, err := jv.Verify(token)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.UserID != "alice" {
		t.Fatalf("UserID = %q, want alice", c.UserID)
	}
}

// logsContain reports whether some log line holds every part.
func (jv *jwksVerifier) logsContain(parts ...string) bool {
	for _, line := range strings.Split(jv.logs.String(), "\n") {
		found := true
		for _, p := range parts {
			found = found && strings.Contains(line, p)
		}
		if found && line != "" {
			return true
		}
	}
	return false
}

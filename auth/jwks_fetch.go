package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

const (
	// jwksFetchTimeout bounds one fetch of one document, so a hanging
	// server delays a refresh, never stops it.
	jwksFetchTimeout = 10 * time.Second
	// maxJWKSBytes bounds a document: real ones are a few kilobytes.
	maxJWKSBytes = 1 << 20
	// maxJWKSKeys bounds the keys taken from one document: a token without
	// kid is tried against every key of its family, each a signature check.
	maxJWKSKeys = 100
)

// maxJWKSRedirects is net/http's own default bound.
const maxJWKSRedirects = 10

// checkRedirect follows redirects as net/http does, except from https to
// plain http: keys configured to come over TLS must not arrive in clear.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxJWKSRedirects {
		return fmt.Errorf("stopped after %d redirects", maxJWKSRedirects)
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return errors.New("redirect from https to http refused")
	}
	return nil
}

// fetch gets one JWK Set document and returns its usable keys. A document
// with none is an error, so the caller keeps the keys it had.
func (j *jwksSet) fetch(ctx context.Context, u jwksURL) ([]jwk, error) {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.raw, nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("document larger than %d bytes", maxJWKSBytes)
	}
	return parseJWKSet(body, j.log.With("url", u.safe))
}

// parseJWKSet reads a JWK Set document. Keys that cannot verify anything
// are skipped with a log line: one odd key must not cost the others.
func parseJWKSet(body []byte, log *slog.Logger) ([]jwk, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode JWK Set: %w", err)
	}
	var keys []jwk
	for i, raw := range doc.Keys {
		var r rawJWK
		if err := json.Unmarshal(raw, &r); err != nil {
			log.Warn("JWKS key skipped", "index", i, "err", err)
			continue
		}
		k, err := parseJWK(r)
		switch {
		case errors.Is(err, errNotForSigning):
			log.Debug("JWKS key skipped", "index", i, "kid", r.Kid, "use", r.Use, "err", err)
			continue
		case err != nil:
			log.Warn("JWKS key skipped", "index", i, "kid", r.Kid, "err", err)
			continue
		}
		if len(keys) == maxJWKSKeys {
			log.Warn("JWKS keys beyond the limit skipped", "limit", maxJWKSKeys, "remaining", len(doc.Keys)-i)
			break
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no usable signature key among %d", len(doc.Keys))
	}
	return keys, nil
}

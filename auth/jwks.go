package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// jwksMinInterval is the shortest time between a fetch of the JWK Sets and
// one that a token asked for (by naming an unknown kid, or arriving before
// any key was fetched): a flood of such tokens, forged or from a
// misconfigured issuer, must not become a flood of requests to the issuer.
// It is also the first retry delay after a failed fetch.
const jwksMinInterval = 10 * time.Second

// jwksSet holds the keys of the NOTIFY_JWKS_URL documents and keeps them
// fresh. Verification only reads the published index (one atomic load); all
// fetching happens in Run.
type jwksSet struct {
	urls        []jwksURL
	refresh     time.Duration
	minInterval time.Duration // jwksMinInterval; shorter in tests
	timeout     time.Duration // jwksFetchTimeout; shorter in tests
	client      *http.Client
	transport   *http.Transport // the client's, closed when Run returns
	log         *slog.Logger
	metrics     *jwksMetrics

	index   atomic.Pointer[jwkIndex] // nil until a document was fetched
	kick    chan struct{}            // size 1: a token wants a fetch soon
	running atomic.Bool
}

// jwksURL is a configured URL and its form fit for logs (no user info, no
// query: either may hold a credential).
type jwksURL struct{ raw, safe string }

// jwkIndex is one published generation of keys, never modified.
type jwkIndex struct {
	keys  []jwk            // every key, in URL order
	byKid map[string][]jwk // keys with a kid; a kid may repeat across URLs
}

// jwksState is what Run remembers between fetches.
type jwksState struct {
	keys     [][]jwk     // each URL's last good keys
	lastOK   []time.Time // each URL's last successful fetch
	started  time.Time   // when the last fetch began
	failures int         // fetches in a row with an error
}

// newJWKSSet returns nil when no URL is configured.
func newJWKSSet(cfg Config, o options) (*jwksSet, error) {
	if len(cfg.JWKSURLs) == 0 {
		return nil, nil
	}
	j := &jwksSet{
		refresh:     cfg.jwksRefresh(),
		minInterval: jwksMinInterval,
		timeout:     jwksFetchTimeout,
		log:         o.log,
		kick:        make(chan struct{}, 1),
	}
	for _, raw := range cfg.JWKSURLs {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, errors.New("NOTIFY_JWKS_URL: a URL does not parse")
		}
		j.urls = append(j.urls, jwksURL{raw: raw, safe: u.Scheme + "://" + u.Host + u.EscapedPath()})
	}
	// A transport of our own, so closing its idle connections when Run
	// ends touches nobody else's.
	if tr, ok := http.DefaultTransport.(*http.Transport); ok {
		j.transport = tr.Clone()
	} else {
		j.transport = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	j.client = &http.Client{Transport: j.transport, CheckRedirect: checkRedirect}
	m, err := newJWKSMetrics(o.reg)
	if err != nil {
		return nil, err
	}
	j.metrics = m
	return j, nil
}

// Run fetches every document at once, then again every refresh interval
// and when a token asks (rate-limited), until ctx ends.
func (j *jwksSet) Run(ctx context.Context) error {
	if !j.running.CompareAndSwap(false, true) {
		return errors.New("JWKS: Run called twice")
	}
	defer j.transport.CloseIdleConnections()
	st := &jwksState{keys: make([][]jwk, len(j.urls)), lastOK: make([]time.Time, len(j.urls))}
	delay := j.refreshAll(ctx, st)
	if ctx.Err() != nil {
		return nil
	}
	due := time.Now().Add(delay)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-j.kick:
			// Bring the next fetch forward, but not closer than
			// minInterval to the last one.
			if soon := st.started.Add(j.minInterval); soon.Before(due) {
				due = soon
				timer.Reset(time.Until(soon))
			}
		case <-timer.C:
			delay = j.refreshAll(ctx, st)
			if ctx.Err() != nil {
				return nil
			}
			due = time.Now().Add(delay)
			timer.Reset(delay)
		}
	}
}

// requestRefresh asks Run for a fetch soon; it never blocks.
func (j *jwksSet) requestRefresh() {
	select {
	case j.kick <- struct{}{}:
	default: // one is already pending
	}
}

// refreshAll fetches every document in parallel (one slow issuer must not
// delay the others), keeps each URL's last good keys when its fetch fails,
// publishes the result and returns the delay until the next fetch.
func (j *jwksSet) refreshAll(ctx context.Context, st *jwksState) time.Duration {
	st.started = time.Now()
	got := make([][]jwk, len(j.urls))
	errs := make([]error, len(j.urls))
	var wg sync.WaitGroup
	for i, u := range j.urls {
		wg.Go(func() { got[i], errs[i] = j.fetch(ctx, u) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0 // stopping: a cancelled fetch is no failure
	}
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			j.log.Warn("JWKS refresh failed; keeping the last good keys", "url", j.urls[i].safe, "err", err)
			continue
		}
		st.keys[i], st.lastOK[i] = got[i], time.Now()
	}
	j.publish(st)
	// Counted once published, so whoever sees a count sees its keys.
	j.metrics.ok.Add(float64(len(j.urls) - failed))
	j.metrics.failed.Add(float64(failed))
	if failed == 0 {
		st.failures = 0
		return j.refresh
	}
	// Sooner than the schedule, backing off: the keys may be missing or
	// stale while the issuer is down.
	st.failures++
	return min(j.refresh, j.minInterval<<min(st.failures-1, 16))
}

// publish makes the URLs' last good keys the ones verification uses.
func (j *jwksSet) publish(st *jwksState) {
	idx := &jwkIndex{byKid: map[string][]jwk{}}
	for _, keys := range st.keys {
		for _, k := range keys {
			idx.keys = append(idx.keys, k)
			if k.kid != "" {
				idx.byKid[k.kid] = append(idx.byKid[k.kid], k)
			}
		}
	}
	if len(idx.keys) == 0 {
		return // nothing was ever fetched: stay closed
	}
	j.index.Store(idx)
	j.metrics.keys.Set(float64(len(idx.keys)))
	var oldest time.Time
	for _, t := range st.lastOK {
		if t.IsZero() {
			return // a URL never fetched has no last success to report
		}
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	j.metrics.lastSuccess.Set(float64(oldest.UnixNano()) / 1e9)
}

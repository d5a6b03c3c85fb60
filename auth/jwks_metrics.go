package auth

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type jwksMetrics struct {
	ok, failed  prometheus.Counter
	keys        prometheus.Gauge
	lastSuccess prometheus.Gauge
}

func newJWKSMetrics(reg prometheus.Registerer) (*jwksMetrics, error) {
	refreshes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_jwks_refreshes_total",
		Help: "Fetches of a NOTIFY_JWKS_URL document, by result: ok, or error (the last good keys stay in use).",
	}, []string{"result"})
	keys := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "notify_jwks_keys",
		Help: "Verification keys in use from the NOTIFY_JWKS_URL documents.",
	})
	last := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "notify_jwks_last_success_timestamp_seconds",
		Help: "The oldest of the NOTIFY_JWKS_URL documents' last successful fetches (Unix time); 0 until each was fetched once.",
	})
	m := &jwksMetrics{
		ok: refreshes.WithLabelValues("ok"), failed: refreshes.WithLabelValues("error"),
		keys: keys, lastSuccess: last,
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{refreshes, keys, last} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("JWKS metrics: %w", err)
	}
	return m, nil
}

package auth

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Option adjusts a Verifier beyond its Config: what a node wires in rather
// than what an operator sets.
type Option func(*options)

type options struct {
	reg prometheus.Registerer
	log *slog.Logger
}

// WithRegisterer registers the verifier's metrics (the JWKS ones; none
// without NOTIFY_JWKS_URL) on reg. Without it they are kept but not exported.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(o *options) { o.reg = reg }
}

// WithLogger logs JWKS refresh failures and skipped keys to log. Without it
// they are discarded.
func WithLogger(log *slog.Logger) Option {
	return func(o *options) { o.log = log }
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	return o
}

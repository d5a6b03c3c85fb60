package broker

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the broker metrics every implementation registers, so the
// exposed metric set does not depend on the backend.
type metrics struct {
	up         prometheus.Gauge   // notify_broker_up
	reconnects prometheus.Counter // notify_broker_reconnects_total
	// lost: notify_broker_subscription_lost_total{reason}, one of the
	// lostReasons; every label is created up front so that each series is
	// exported (at 0) before its first loss.
	lost *prometheus.CounterVec

	appends       prometheus.Counter   // notify_history_appends_total
	readSeconds   prometheus.Histogram // notify_history_read_seconds
	functionLoads prometheus.Counter   // notify_history_function_loads_total
}

// newMetrics creates the broker metrics and registers them on reg (nothing is
// registered when reg is nil). When a collector of the same name is already
// registered (a second broker on the same registry, as tests do) the existing
// one is used.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_broker_up",
			Help: "1 while the broker demonstrably delivers (a probe made the round trip recently), else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_broker_reconnects_total",
			Help: "Times the broker subscription was re-established after it had been lost.",
		}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_broker_subscription_lost_total",
			Help: "Times a working broker subscription was lost, by reason: closed_while_behind (Redis closed it while this node read late: most likely client-output-buffer-limit pubsub), closed_by_server (other closes: restart, failover, CLIENT KILL), timeout (nothing arrived for the probe timeout), error.",
		}, []string{"reason"}),
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_history_appends_total",
			Help: "Messages appended to a user's or topic's history by this node (one per target).",
		}),
		readSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "notify_history_read_seconds",
			Help:    "Time to read a stream's history (one round trip to Redis, or the in-memory copy).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 3, 10), // 50us .. ~1s
		}),
		functionLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_history_function_loads_total",
			Help: "Times this node loaded the notify Redis Function library (at start, after a resubscribe, or when a call found it missing).",
		}),
	}
	// A collector already registered got its labels the same way.
	for _, reason := range lostReasons {
		m.lost.WithLabelValues(reason)
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.up, err = register(reg, m.up)
	if err != nil {
		return nil, err
	}
	m.reconnects, err = register(reg, m.reconnects)
	if err != nil {
		return nil, err
	}
	m.lost, err = register(reg, m.lost)
	if err != nil {
		return nil, err
	}
	m.appends, err = register(reg, m.appends)
	if err != nil {
		return nil, err
	}
	m.readSeconds, err = register(reg, m.readSeconds)
	if err != nil {
		return nil, err
	}
	m.functionLoads, err = register(reg, m.functionLoads)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c on reg, or returns the collector already registered
// under the same description.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// setUp sets the up gauge from a readiness result.
func (m *metrics) setUp(ready bool) {
	if ready {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
}

package handoff

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sent, failed, dropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_handoffs_total",
		Help: "Undelivered messages handed to NOTIFY_UNDELIVERED_WEBHOOK, by result: sent, failed (the webhook or the claim failed), dropped (the queue was full).",
	}, []string{"result"})
	m := &metrics{sent: vec.WithLabelValues("sent"), failed: vec.WithLabelValues("failed"), dropped: vec.WithLabelValues("dropped")}
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, fmt.Errorf("handoff metrics: %w", err)
		}
	}
	return m, nil
}

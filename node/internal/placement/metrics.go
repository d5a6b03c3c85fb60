package placement

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	members         prometheus.Gauge
	partitions      prometheus.Gauge
	forwarded       prometheus.Gauge
	forwardErrors   prometheus.Counter
	unverified      prometheus.Counter
	rebalanceCloses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_cluster_members",
			Help: "Cluster members this node sees (itself included).",
		}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_ring_partitions_owned",
			Help: "Ring partitions this node owns.",
		}),
		forwarded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_forwarded_connections",
			Help: "Client connections this node relays to their owner.",
		}),
		forwardErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_forward_errors_total",
			Help: "Handshakes that could not be relayed to the owner and were served locally.",
		}),
		unverified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_forwarded_unverified_total",
			Help: "Requests whose X-Notify-Forwarded-By was not honoured (no valid, fresh signature by the cluster secret) and that were taken for a client's.",
		}),
		rebalanceCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_rebalance_closes_total",
			Help: "Connections closed with 1012 \"moved\" because their user is now owned by another node.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.members, m.partitions, m.forwarded, m.forwardErrors, m.unverified, m.rebalanceCloses)
	}
	return m
}

package mesh

import "github.com/prometheus/client_golang/prometheus"

// Why messages were dropped: the values of notify_mesh_dropped_total's
// reason label. The peer is not a label: names change with every pod, and
// the logs name it.
const (
	reasonQueueFull   = "queue_full"  // the peer's queue was at Config.QueueBytes
	reasonUnreachable = "unreachable" // the peer could not be reached for the retry period, or is not a member
	reasonLeft        = "left"        // the peer left the membership with messages queued
	reasonStopped     = "stopped"     // this node stopped with messages queued
)

type metrics struct {
	sent, received, connects   prometheus.Counter
	dropped                    *prometheus.CounterVec
	linksUp                    prometheus.Gauge
	callsOK, callsFailed       prometheus.Counter
	handedOver, handOverFailed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_mesh_state_calls_total",
		Help: "State calls forwarded to the user's owner over a link, by result (ok, error).",
	}, []string{"result"})
	handovers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_mesh_state_handovers_total",
		Help: "Users whose state was handed to their new owner after a ring change or a leave, by result (sent, failed).",
	}, []string{"result"})
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_mesh_sent_total",
			Help: "Messages written to links to other members (each once, resends after a reconnection not counted).",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_mesh_received_total",
			Help: "Messages received from other members' links and delivered here.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_mesh_dropped_total",
			Help: "Messages for other members dropped, by reason: queue_full, unreachable (retry period over), left, stopped.",
		}, []string{"reason"}),
		linksUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_mesh_links_up",
			Help: "Links to other members connected now.",
		}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_mesh_link_connects_total",
			Help: "Link connections made to other members, reconnections included.",
		}),
		callsOK: calls.WithLabelValues("ok"), callsFailed: calls.WithLabelValues("error"),
		handedOver: handovers.WithLabelValues("sent"), handOverFailed: handovers.WithLabelValues("failed"),
	}
	for _, r := range []string{reasonQueueFull, reasonUnreachable, reasonLeft, reasonStopped} {
		m.dropped.WithLabelValues(r) // every reason shows, at 0
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sent, m.received, m.dropped, m.linksUp, m.connects, calls, handovers} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) drop(reason string, n int) { m.dropped.WithLabelValues(reason).Add(float64(n)) }

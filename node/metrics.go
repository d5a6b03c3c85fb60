package node

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/notify-dev/notify/transport"
)

// Rejection reasons (label of notify_connections_rejected_total).
const (
	rejectBadRequest   = "bad_request"
	rejectDraining     = "draining"
	rejectOrigin       = "origin"
	rejectUnauthorized = "unauthorized"
	rejectTopic        = "topic"
	rejectState        = "state_unavailable"
	rejectUpgrade      = "upgrade_failed"
)

// Drop reasons (label of notify_messages_dropped_total).
const (
	dropEmptyID      = "empty_id"
	dropBadChannel   = "bad_channel"
	dropSlowConsumer = "slow_consumer"
)

// closeCodes are the disconnect codes given their own label value; anything
// else a client sends is counted as "other" so the label stays bounded.
var closeCodes = []int{
	transport.CloseNormal, transport.CloseGoingAway, transport.CloseProtocolError,
	transport.CloseNoStatus, transport.CloseAbnormal, transport.CloseInvalidPayload,
	transport.CloseTooBig, transport.CloseServiceRestart, transport.CloseTokenExpired,
	transport.CloseDisconnected, transport.CloseSlowConsumer,
}

type metrics struct {
	connections *prometheus.GaugeVec
	accepted    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	received    prometheus.Counter
	delivered   prometheus.Counter
	dropped     *prometheus.CounterVec

	codeLabel map[int]string

	members         prometheus.Gauge
	partitions      prometheus.Gauge
	forwarded       prometheus.Gauge
	forwardErrors   prometheus.Counter
	rebalanceCloses prometheus.Counter

	// Children used on every connection or message, looked up once.
	transports   [4]transportMetrics // by clientKind
	droppedEmpty prometheus.Counter
	droppedBad   prometheus.Counter
	droppedSlow  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "notify_connections",
			Help: "Open client connections on this node, by transport (websocket, sse, phoenix, longpoll sessions).",
		}, []string{"transport"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_connections_accepted_total",
			Help: "Client connections accepted.",
		}, []string{"transport"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_connections_rejected_total",
			Help: "Connection attempts refused, by reason.",
		}, []string{"reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_disconnects_total",
			Help: "Connections ended, by close code (sent by the server, or by the client when it closed first; 1006 = no close frame).",
		}, []string{"code"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_messages_received_total",
			Help: "Messages received from the broker.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_messages_delivered_total",
			Help: "Messages handed to client connections (one per connection).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_messages_dropped_total",
			Help: "Messages not delivered, by reason.",
		}, []string{"reason"}),
		codeLabel: make(map[int]string),
	}
	m.members = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "notify_cluster_members",
		Help: "Cluster members this node sees (itself included).",
	})
	m.partitions = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "notify_ring_partitions_owned",
		Help: "Ring partitions this node owns.",
	})
	m.forwarded = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "notify_forwarded_connections",
		Help: "Client connections this node relays to their owner.",
	})
	m.forwardErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "notify_forward_errors_total",
		Help: "Handshakes that could not be relayed to the owner and were served locally.",
	})
	m.rebalanceCloses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "notify_rebalance_closes_total",
		Help: "Connections closed with 1012 \"moved\" because their user is now owned by another node.",
	})
	reg.MustRegister(m.members, m.partitions, m.forwarded, m.forwardErrors, m.rebalanceCloses)
	reg.MustRegister(m.connections, m.accepted, m.rejected, m.disconnects, m.received, m.delivered, m.dropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Every series exists from the start, so rate() and alerts see zeros
	// rather than nothing.
	for kind, name := range []string{kindNotify: "websocket", kindSSE: "sse", kindPhoenix: "phoenix", kindLongPoll: "longpoll"} {
		m.transports[kind] = transportMetrics{name: name, connections: m.connections.WithLabelValues(name), accepted: m.accepted.WithLabelValues(name)}
	}
	for _, r := range []string{rejectBadRequest, rejectDraining, rejectOrigin, rejectUnauthorized, rejectTopic, rejectState, rejectUpgrade} {
		m.rejected.WithLabelValues(r)
	}
	m.droppedEmpty = m.dropped.WithLabelValues(dropEmptyID)
	m.droppedBad = m.dropped.WithLabelValues(dropBadChannel)
	m.droppedSlow = m.dropped.WithLabelValues(dropSlowConsumer)
	for _, c := range closeCodes {
		m.codeLabel[c] = strconv.Itoa(c)
		m.disconnects.WithLabelValues(m.codeLabel[c])
	}
	m.disconnects.WithLabelValues("other")
	return m
}

// transportMetrics are the connection metrics of one transport.
type transportMetrics struct {
	name        string
	connections prometheus.Gauge
	accepted    prometheus.Counter
}

func (m *metrics) transport(k clientKind) *transportMetrics { return &m.transports[k] }

func (m *metrics) disconnect(code int) {
	l, ok := m.codeLabel[code]
	if !ok {
		l = "other"
	}
	m.disconnects.WithLabelValues(l).Inc()
}

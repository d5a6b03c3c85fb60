package hub

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/transport"
)

// Drop reasons (label of notify_messages_dropped_total).
const (
	dropEmptyID      = "empty_id"
	dropSlowConsumer = "slow_consumer"
)

// Close codes with a label value of their own; anything else a client sends
// is counted as "other" so that the label stays bounded.
var closeCodes = []int{
	transport.CloseNormal, transport.CloseGoingAway, transport.CloseProtocolError,
	transport.CloseNoStatus, transport.CloseAbnormal, transport.CloseInvalidPayload,
	transport.CloseTooBig, transport.CloseServiceRestart, transport.CloseTokenExpired,
	transport.CloseDisconnected, transport.CloseSlowConsumer,
}

// metrics are the hub's: connections, messages, disconnects. Every series a
// message or a connection touches is looked up once, here.
type metrics struct {
	received     prometheus.Counter
	delivered    prometheus.Counter
	droppedEmpty prometheus.Counter
	droppedSlow  prometheus.Counter
	transports   [numTransports]transportMetrics
	disconnects  map[int]prometheus.Counter // by close code
	otherCode    prometheus.Counter
}

type transportMetrics struct {
	connections prometheus.Gauge
	accepted    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	connections := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "notify_connections",
		Help: "Open client connections on this node, by transport (websocket, sse, phoenix, longpoll sessions).",
	}, []string{"transport"})
	accepted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_connections_accepted_total",
		Help: "Client connections accepted.",
	}, []string{"transport"})
	disconnects := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_disconnects_total",
		Help: "Connections ended, by close code (sent by the server, or by the client when it closed first; 1006 = no close frame).",
	}, []string{"code"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_messages_dropped_total",
		Help: "Messages not delivered, by reason.",
	}, []string{"reason"})
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_messages_received_total",
			Help: "Messages received from the broker (one per target user or topic).",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_messages_delivered_total",
			Help: "Messages handed to client connections (one per connection).",
		}),
		// Every series exists from the start, so rate() and alerts see
		// zeros rather than nothing.
		droppedEmpty: dropped.WithLabelValues(dropEmptyID),
		droppedSlow:  dropped.WithLabelValues(dropSlowConsumer),
		disconnects:  make(map[int]prometheus.Counter, len(closeCodes)),
		otherCode:    disconnects.WithLabelValues("other"),
	}
	for t := range numTransports {
		name := t.String()
		m.transports[t] = transportMetrics{connections.WithLabelValues(name), accepted.WithLabelValues(name)}
	}
	for _, c := range closeCodes {
		m.disconnects[c] = disconnects.WithLabelValues(strconv.Itoa(c))
	}
	if reg != nil {
		reg.MustRegister(connections, accepted, disconnects, dropped, m.received, m.delivered)
	}
	return m
}

func (m *metrics) disconnect(code int) {
	if c, ok := m.disconnects[code]; ok {
		c.Inc()
		return
	}
	m.otherCode.Inc()
}

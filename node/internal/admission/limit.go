package admission

import (
	"math/rand/v2"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Relays counts the clients relayed through this node to their owners
// (placement implements it).
type Relays interface {
	Relayed() int64
}

// Retry-After of a refusal at the connection limit: a few seconds, drawn
// per refusal, so that the clients refused in one burst do not all come
// back in the same second.
const (
	retryAfterMin = 2 // seconds
	retryAfterMax = 6
)

// LimitMessage is the error message of a refusal at NOTIFY_MAX_CONNECTIONS.
const LimitMessage = "node at its connection limit, retry later"

// Load is what NOTIFY_MAX_CONNECTIONS bounds: the descriptors this node's
// clients hold. A client served here (hub.Open: relayed here or not, long
// polls too) holds one; a client relayed through here to its owner holds
// two, its own socket and the relay's. Counting descriptors, not clients,
// keeps the default limit (the open-files limit less a reserve) true when
// a cluster relays most of its clients.
func (p *Pipeline) Load() int64 {
	load := p.cfg.Hub.Open()
	if p.cfg.Relays != nil {
		load += 2 * p.cfg.Relays.Relayed()
	}
	return load
}

// full reports whether a new client would take the node past its limit.
// The check is not a reservation: handshakes admitted at the same moment
// may pass it together, by at most the handshakes in flight (which the
// limit's reserve absorbs).
func (p *Pipeline) full() bool {
	return p.cfg.MaxConnections > 0 && p.Load() >= int64(p.cfg.MaxConnections)
}

// setRetryAfter sets the Retry-After header of a refusal at the limit.
func setRetryAfter(w http.ResponseWriter) {
	s := retryAfterMin + rand.IntN(retryAfterMax-retryAfterMin+1)
	w.Header().Set("Retry-After", strconv.Itoa(s))
}

// registerLimit registers notify_connections_limit: the limit in force
// (0: none), next to notify_connections for dashboards and alerts.
func registerLimit(reg prometheus.Registerer, limit int) error {
	if reg == nil {
		return nil
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "notify_connections_limit",
		Help: "NOTIFY_MAX_CONNECTIONS in force: descriptors clients may hold on this node before new ones get 503 (0: no limit).",
	})
	g.Set(float64(limit))
	return reg.Register(g)
}

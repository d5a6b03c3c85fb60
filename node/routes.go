package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/broker/mesh"
	"github.com/notify-dev/notify/node/internal/peers"
)

// routes are the muxes of the HTTP listener (clients, API, health, pages)
// and of the internal one (metrics, /cluster, what peers call, pprof): each
// path goes to the part that owns it. Without INTERNAL_PORT the HTTP mux
// carries both sets and internal is nil.
func (n *Node) routes() (public, internal http.Handler) {
	mux := http.NewServeMux()
	mux.HandleFunc("/notify/ws", n.notify.ServeWS)
	mux.HandleFunc("GET /notify/sse", n.notify.ServeSSE)
	mux.HandleFunc("/pubsub/websocket", n.phoenix.ServeWebSocket)
	mux.HandleFunc("GET /pubsub/longpoll", n.phoenix.ServeLongPoll)
	mux.HandleFunc("POST /pubsub/longpoll", n.phoenix.ServeLongPoll)
	mux.Handle(notifypb.NotifyServicePathPrefix, n.api.TwirpHandler())
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.HandleFunc("GET /api/healthz", serveLegacyHealth)
	mux.HandleFunc("GET /{$}", n.pages.ServePage)
	mux.HandleFunc("GET /static/{file}", n.pages.ServeStatic)
	if n.cfg.InternalPort == "" {
		n.internalRoutes(mux)
		return mux, nil
	}
	imux := http.NewServeMux()
	n.internalRoutes(imux)
	if n.cfg.pprofInternal() {
		handlePprof(imux)
	}
	return mux, imux
}

// internalRoutes are the paths for the cluster's own pods and its
// monitoring, not for clients.
func (n *Node) internalRoutes(mux *http.ServeMux) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /cluster", n.serveCluster)
	mux.HandleFunc("POST "+peers.PresencePath, n.peers.ServePresence)
	if n.mesh != nil {
		mux.HandleFunc("GET "+mesh.LinkPath, n.mesh.ServeLink)
	}
}

package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/node/internal/peers"
)

// routes is the HTTP listener's mux: each path goes to the part that owns it.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/notify/ws", n.notify.ServeWS)
	mux.HandleFunc("GET /notify/sse", n.notify.ServeSSE)
	mux.HandleFunc("/pubsub/websocket", n.phoenix.ServeWebSocket)
	mux.HandleFunc("GET /pubsub/longpoll", n.phoenix.ServeLongPoll)
	mux.HandleFunc("POST /pubsub/longpoll", n.phoenix.ServeLongPoll)
	mux.Handle(notifypb.NotifyServicePathPrefix, n.api.TwirpHandler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.HandleFunc("GET /api/healthz", serveLegacyHealth)
	mux.HandleFunc("GET /cluster", n.serveCluster)
	mux.HandleFunc("POST "+peers.PresencePath, n.peers.ServePresence)
	mux.HandleFunc("GET /{$}", n.pages.ServePage)
	mux.HandleFunc("GET /static/{file}", n.pages.ServeStatic)
	return mux
}

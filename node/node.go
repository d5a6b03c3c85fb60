// Package node wires a notify node together: broker and state store, the
// client transports, the delivery hub, HTTP routes, and the lifecycle from
// start to drain.
package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/notify-dev/notify/api"
	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/ring"
	"github.com/notify-dev/notify/transport"
)

// Node is one notify server.
type Node struct {
	cfg      Config
	log      *slog.Logger
	reg      *prometheus.Registry
	metrics  *metrics
	verifier *auth.Verifier
	origins  []originPattern
	broker   broker.Broker
	state    broker.StateStore
	closer   func() error // closes the broker's connections
	ws       *transport.Server
	hub      *hub
	api      *api.Server

	httpSrv  *http.Server
	httpLn   net.Listener
	pprofSrv *http.Server
	pprofLn  net.Listener
	grpcSrv  *grpc.Server
	grpcLn   net.Listener

	draining   atomic.Bool
	stopBroker context.CancelFunc
	brokerDone chan struct{}
	conns      atomic.Int64  // open client connections
	relayed    atomic.Int64  // connections relayed to their owner through this node
	connsZero  chan struct{} // signalled when the last connection or relay ends while draining
	stopOnce   sync.Once

	ringCfg       ring.Config
	cluster       *cluster.Cluster
	cview         atomic.Pointer[clusterView]
	rebalanceWake chan struct{} // size 1: the ring changed
	// size 1: a client was relayed here for a user another node owns.
	rebalanceRecheck chan struct{}
	peerClient       *http.Client    // presence calls to other members
	lpTransport      *http.Transport // long-poll requests proxied to owners

	// Every Phoenix socket and long-poll session, joined or not (a socket
	// in no user's set is not in the hub's lists): an intrusive list, as a
	// map entry would cost more than the socket.
	phxMu          sync.Mutex
	phxHead        *phxSocket
	lpMu           sync.Mutex
	lpSessions     map[string]*lpSession // by session token
	stopBackground context.CancelFunc
	background     sync.WaitGroup
}

// New builds a node from a validated config. It starts nothing.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg:              cfg,
		log:              log,
		reg:              prometheus.NewRegistry(),
		hub:              newHub(),
		connsZero:        make(chan struct{}, 1),
		ringCfg:          cfg.Ring,
		rebalanceWake:    make(chan struct{}, 1),
		rebalanceRecheck: make(chan struct{}, 1),
		peerClient:       &http.Client{Timeout: 3 * time.Second},
		lpSessions:       map[string]*lpSession{},
		lpTransport: &http.Transport{
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: lpHold + 5*time.Second,
		},
	}
	if n.ringCfg == (ring.Config{}) {
		n.ringCfg = ring.DefaultConfig()
	}
	// Until the cluster reports, the node is a cluster of one.
	r, err := ring.New(n.ringCfg, []string{cfg.NodeName})
	if err != nil {
		return nil, err
	}
	n.cview.Store(&clusterView{ring: r, relay: map[string]string{}})
	n.metrics = newMetrics(n.reg)
	n.metrics.members.Set(1)
	n.metrics.partitions.Set(float64(r.Owned(cfg.NodeName)))

	if cfg.Auth.Secret == "" && len(cfg.Auth.PublicKeyFiles) == 0 {
		n.cfg.Auth.Secret = randomSecret()
		log.Warn("no NOTIFY_JWT_SECRET or NOTIFY_JWT_PUBLIC_KEYS set: using a random secret for this process; tokens signed elsewhere will be refused")
	}
	v, err := auth.NewVerifier(n.cfg.Auth)
	if err != nil {
		return nil, err
	}
	n.verifier = v
	for _, o := range cfg.AllowedOrigins {
		p, _ := parseOriginPattern(o) // checked by Validate
		n.origins = append(n.origins, p)
	}

	if cfg.Redis.Enabled() {
		opts, err := cfg.Redis.Options()
		if err != nil {
			return nil, err
		}
		r, err := broker.NewRedis(opts, broker.RedisOptions{
			Logger:        log,
			Registerer:    n.reg,
			NodeID:        cfg.NodeName,
			ProbeInterval: cfg.ProbeInterval,
		})
		if err != nil {
			return nil, fmt.Errorf("redis broker: %w", err)
		}
		n.broker, n.state, n.closer = r, r, r.Close
	} else {
		m := broker.NewMemory(n.reg)
		n.broker, n.state, n.closer = m, m, func() error { return nil }
	}

	n.api = api.NewServer(apiBackend{StateStore: n.state, n: n}, api.Config{
		APIKey:         cfg.APIKey,
		MaxPublishSize: cfg.MaxPublishSize,
		Logger:         log,
		Registerer:     n.reg,
	})
	if cfg.APIKey == "" {
		log.Warn("NOTIFY_API_KEY is not set: the server API refuses every call but Auth")
	}

	tc := cfg.transportConfig()
	tc.Handler = wsEvents{n}
	tc.Logger = log
	ws, err := transport.NewServer(tc)
	if err != nil {
		return nil, err
	}
	n.ws = ws
	return n, nil
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Registry is the node's metrics registry (for tests and embedding).
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Addr is the address the HTTP listener is bound to (after Start).
func (n *Node) Addr() string { return n.httpLn.Addr().String() }

// GRPCAddr is the address the gRPC listener is bound to (after Start), or ""
// when GRPC_PORT is off.
func (n *Node) GRPCAddr() string {
	if n.grpcLn == nil {
		return ""
	}
	return n.grpcLn.Addr().String()
}

// Start listens and starts the broker. The node serves until Shutdown.
func (n *Node) Start() error {
	addr, _ := normalizeAddr(n.cfg.Port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen PORT %s: %w", n.cfg.Port, err)
	}
	n.httpLn = ln
	n.httpSrv = &http.Server{
		Handler:           n.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	if n.cfg.PprofPort != "off" {
		paddr, _ := normalizeAddr(n.cfg.PprofPort)
		pln, err := net.Listen("tcp", paddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen PPROF_PORT %s: %w", n.cfg.PprofPort, err)
		}
		n.pprofLn = pln
		n.pprofSrv = &http.Server{Handler: pprofRoutes(), ReadHeaderTimeout: 10 * time.Second}
		go n.serve(n.pprofSrv, pln, "pprof")
	}

	if n.cfg.GRPCPort != "off" {
		gaddr, _ := normalizeAddr(n.cfg.GRPCPort)
		gln, err := net.Listen("tcp", gaddr)
		if err != nil {
			ln.Close()
			if n.pprofSrv != nil {
				n.pprofSrv.Close()
			}
			return fmt.Errorf("listen GRPC_PORT %s: %w", n.cfg.GRPCPort, err)
		}
		n.grpcLn = gln
		n.grpcSrv = n.api.GRPCServer()
		go func() {
			if err := n.grpcSrv.Serve(gln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				n.log.Error("gRPC listener stopped", "err", err)
			}
		}()
	}

	if err := n.startCluster(ln); err != nil {
		ln.Close()
		if n.pprofSrv != nil {
			n.pprofSrv.Close()
		}
		if n.grpcSrv != nil {
			n.grpcSrv.Stop()
		}
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	n.stopBroker = cancel
	n.brokerDone = make(chan struct{})
	go func() {
		defer close(n.brokerDone)
		if err := n.broker.Run(ctx, n.deliver); err != nil {
			n.log.Error("broker stopped", "err", err)
		}
	}()
	go n.serve(n.httpSrv, ln, "http")
	n.log.Info("notify node started", "addr", ln.Addr().String(), "grpc", n.GRPCAddr(), "node", n.cfg.NodeName,
		"broker", n.brokerName(), "pprof", n.cfg.PprofPort)
	return nil
}

// startCluster joins the cluster; relays reach this node on the HTTP
// listener's port.
func (n *Node) startCluster(httpLn net.Listener) error {
	c, err := cluster.New(cluster.Config{
		NodeName:       n.cfg.NodeName,
		BindAddr:       n.cfg.GossipAddr,
		AdvertiseAddr:  n.cfg.AdvertiseAddr,
		Join:           n.cfg.Join,
		GossipKey:      n.cfg.GossipKey,
		Label:          n.cfg.ClusterLabel,
		RelayPort:      httpLn.Addr().(*net.TCPAddr).Port,
		RingHash:       n.ringCfg.Hash(),
		RejoinInterval: n.cfg.RejoinEvery,
		Local:          n.cfg.GossipLocal,
		Logger:         n.log,
	}, n.onMembership)
	if err != nil {
		return err
	}
	bctx, cancel := context.WithCancel(context.Background())
	n.stopBackground = cancel
	if err := c.Start(bctx); err != nil {
		cancel()
		return fmt.Errorf("join cluster: %w", err)
	}
	n.cluster = c
	n.background.Add(2)
	go func() {
		defer n.background.Done()
		n.rebalance(bctx)
	}()
	go func() {
		defer n.background.Done()
		n.reapSessions(bctx)
	}()
	return nil
}

func (n *Node) brokerName() string {
	if n.cfg.Redis.Enabled() {
		return "redis"
	}
	return "memory"
}

func (n *Node) serve(srv *http.Server, ln net.Listener, name string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error("listener stopped", "listener", name, "err", err)
	}
}

// Run starts the node, serves until ctx ends, then drains and stops.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	n.log.Info("stopping: draining connections", "drain_timeout", n.cfg.DrainTimeout.String(), "connections", n.conns.Load())
	return n.Shutdown(context.Background())
}

func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/notify/ws", n.serveWS)
	mux.HandleFunc("GET /notify/sse", n.serveSSE)
	mux.HandleFunc("/pubsub/websocket", n.servePhoenixWS)
	mux.HandleFunc("GET /pubsub/longpoll", n.serveLongPoll)
	mux.HandleFunc("POST /pubsub/longpoll", n.serveLongPoll)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.HandleFunc("GET /cluster", n.serveCluster)
	mux.HandleFunc("POST /cluster/presence", n.servePresence)
	mux.Handle(notifypb.NotifyServicePathPrefix, n.api.TwirpHandler())
	mux.HandleFunc("GET /{$}", n.servePage)
	mux.HandleFunc("GET /static/{file}", n.serveStatic)
	return mux
}

func pprofRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// deliver is the broker's handler: every published message passes here.
func (n *Node) deliver(channel, payload string) {
	if channel == broker.ControlChannel {
		n.onControl(payload)
		return
	}
	n.metrics.received.Inc()
	t, ok := broker.ParseChannel(channel)
	switch {
	case !ok:
		n.metrics.droppedBad.Inc()
		return
	case t.Name == "":
		n.metrics.droppedEmpty.Inc()
		return
	}
	if d := n.hub.deliver(t.Topic, t.Name, payload, ""); d > 0 {
		n.metrics.delivered.Add(float64(d))
	}
}

// Shutdown drains the node: readiness goes false, new connections are
// refused, open ones are closed with 1012 "shutdown" spread over the drain
// timeout; then everything stops. ctx bounds the wait.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.stopOnce.Do(func() { err = n.shutdown(ctx) })
	return err
}

func (n *Node) shutdown(ctx context.Context) error {
	n.draining.Store(true)
	n.api.SetServing(false)
	if n.relayed.Load() > 0 {
		// Clients relayed through this node are closed by their owners,
		// whose close frames pass through the relay.
		msg, _ := json.Marshal(control{Op: opDrainVia, Node: n.cfg.NodeName})
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := n.broker.Publish(pctx, broker.ControlChannel, msg); err != nil {
			n.log.Warn("cannot ask owners to close relayed connections", "err", err)
		}
		cancel()
	}
	if n.cluster != nil {
		// The others drop this node from their rings at once, so clients
		// that reconnect land on the new owners.
		if err := n.cluster.Leave(2 * time.Second); err != nil {
			n.log.Warn("cluster leave", "err", err)
		}
	}
	n.drain(ctx)

	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	errs := []error{n.httpSrv.Shutdown(hctx)}
	if n.pprofSrv != nil {
		errs = append(errs, n.pprofSrv.Shutdown(hctx))
	}
	if n.grpcSrv != nil {
		stopped := make(chan struct{})
		go func() { n.grpcSrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-hctx.Done():
			n.grpcSrv.Stop()
		}
	}
	n.ws.Close()
	n.lpTransport.CloseIdleConnections()
	n.stopBackground()
	n.background.Wait()
	if n.cluster != nil {
		errs = append(errs, n.cluster.Shutdown())
	}
	n.stopBroker()
	<-n.brokerDone
	errs = append(errs, n.closer())
	n.log.Info("notify node stopped")
	return errors.Join(errs...)
}

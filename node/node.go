// Package node is the composition root of a notify node: it builds the
// parts (broker and state store, event loops, hub, admission, placement,
// peers, the protocol endpoints, the API), routes HTTP to them, and runs
// their one lifecycle from start to drain. Each job lives in a package of
// its own under node/internal; this package only wires them.
package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/notify-dev/notify/api"
	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/broker/mesh"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/service"
	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/handoff"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/node/internal/notifyproto"
	"github.com/notify-dev/notify/node/internal/pages"
	"github.com/notify-dev/notify/node/internal/peers"
	"github.com/notify-dev/notify/node/internal/phoenix"
	"github.com/notify-dev/notify/node/internal/placement"
	"github.com/notify-dev/notify/transport"
)

// Node is one notify server.
type Node struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	accepts *acceptMetrics // every listener's descriptor shortages (guardedListener)

	broker      broker.Broker
	state       broker.StateStore
	history     historyStore      // nil: history is off
	closeBroker func() error      // closes the broker's connections
	loops       *transport.Server // the event loops every client connection and relay lives in
	hub         *hub.Hub
	accept      *admission.Pipeline
	place       *placement.Placement
	peers       *peers.Peers
	peerAuth    *cluster.PeerAuth // the cluster secret: presence calls and relays are signed with it
	notify      *notifyproto.Endpoint
	phoenix     *phoenix.Endpoint
	pages       *pages.Pages
	api         *api.Server
	handoff     *handoff.Handoff // nil: no NOTIFY_UNDELIVERED_WEBHOOK
	mesh        *mesh.Mesh       // the cluster broker (also broker and state); nil on another

	// Set by Start.
	cluster   *cluster.Cluster
	listeners *listeners
	services  *service.Group
	jwks      service.Service // the verifier's JWK Set refresh; idle without NOTIFY_JWKS_URL

	stopOnce sync.Once
	stopping atomic.Bool // readiness is false: Shutdown began
	stopErr  error
}

// brokerHandler routes what the broker's subscription brings: deliveries
// to the hub (Hub.DeliverBatched, then Hub.Flush), node commands to peers
// (Peers.Control).
type brokerHandler struct {
	*hub.Hub
	*peers.Peers
}

var (
	_ broker.Handler = brokerHandler{}
	_ broker.Flusher = brokerHandler{}
)

// Deliver queues the message for the clients' event loops, which the
// broker's Flush (Hub.Flush) wakes once per batch of messages.
func (b brokerHandler) Deliver(t broker.Target, m broker.Message) { b.Hub.DeliverBatched(t, m) }

// historyStore is the broker's history as the node uses it: appends from
// the API, reads and the live barrier from admission.
type historyStore interface {
	broker.History
	broker.Handoffs
	admission.History
}

// New builds a node from a config. It binds nothing and joins nothing
// (Start does); a node that is never started is released by Shutdown.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	// go_gc_heap_live_bytes besides the MemStats figures: the heap the last
	// collection marked live, the one heap figure a leak moves and span
	// occupancy or allocation since the collection do not.
	live := collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)}
	n.reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(live)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	accepts, err := newAcceptMetrics(n.reg)
	if err != nil {
		return nil, err
	}
	n.accepts = accepts
	verifier, err := n.newVerifier()
	if err != nil {
		return nil, err
	}
	n.jwks = verifier.Service()
	if err := n.newBroker(); err != nil {
		return nil, err
	}
	tc := cfg.transportConfig()
	tc.Logger = log
	if n.loops, err = transport.NewServer(tc); err != nil {
		_ = n.closeBroker()
		return nil, err
	}
	if err := n.newParts(verifier); err != nil {
		n.loops.Close()
		_ = n.closeBroker()
		return nil, err
	}
	return n, nil
}

func (n *Node) newVerifier() (*auth.Verifier, error) {
	ac := n.cfg.Auth
	if ac.Secret == "" && len(ac.PublicKeyFiles) == 0 && len(ac.JWKSURLs) == 0 {
		ac.Secret = randomSecret()
		n.log.Warn("no NOTIFY_JWT_SECRET, NOTIFY_JWT_PUBLIC_KEYS or NOTIFY_JWKS_URL set: using a random secret for this process; tokens signed elsewhere will be refused")
	}
	return auth.NewVerifier(ac, auth.WithRegisterer(n.reg), auth.WithLogger(n.log))
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newBroker is Redis when it is configured, else the embedded broker;
// the cluster broker is built by newParts, once placement exists.
func (n *Node) newBroker() error {
	if n.cfg.brokerKind() == brokerCluster {
		n.closeBroker = func() error { return nil } // its links end with its Run
		return nil
	}
	if !n.cfg.Redis.Enabled() {
		// The older Notify defaulted PUBSUB_REDIS_ADDR to redis:6379: a
		// deployment migrated without setting it would silently never see a
		// Redis publish.
		n.log.Warn("no Redis configured (PUBSUB_REDIS_ADDR, REDIS_URL, REDIS_SENTINEL_ADDRS, REDIS_CLUSTER_ADDRS): running on the embedded broker, so messages published to a Redis never reach this node",
			"setting", "PUBSUB_REDIS_ADDR")
		m := broker.NewMemory(n.reg, n.cfg.History)
		n.broker, n.state, n.closeBroker = m, m, func() error { return nil }
		if n.cfg.History.Enabled() {
			n.history = m
		}
		return nil
	}
	topology, err := n.cfg.Redis.Topology()
	if err != nil {
		return err
	}
	r, err := broker.NewRedisTopology(topology, broker.RedisOptions{
		Logger:           n.log,
		Registerer:       n.reg,
		NodeID:           n.cfg.NodeName,
		ProbeInterval:    n.cfg.ProbeInterval,
		History:          n.cfg.History,
		Subscribe:        broker.SubscribeMode(n.cfg.SubscribeMode),
		UnsubscribeDelay: n.cfg.UnsubscribeDelay,
	})
	if err != nil {
		return fmt.Errorf("redis broker: %w", err)
	}
	n.broker, n.state, n.closeBroker = r, r, r.Close
	if n.cfg.History.Enabled() {
		n.history = r
	}
	return nil
}

// newParts builds the node's jobs, each from what it needs.
func (n *Node) newParts(verifier *auth.Verifier) error {
	cfg := n.cfg
	n.hub = hub.New(n.reg, n.log)
	if r := n.perChannel(); r != nil {
		n.hub.Follow(r) // the broker subscribes to the channels of the hub's clients
	}
	if err := n.newPeerAuth(); err != nil {
		return err
	}
	place, err := placement.New(placement.Config{
		NodeName: cfg.NodeName, Ring: cfg.Ring, RebalanceRate: cfg.RebalanceRate, DrainTimeout: cfg.DrainTimeout,
		RequestTimeout: n.longPollHold() + 5*time.Second,
		Hub:            n.hub, Transport: n.loops, Draining: n.draining, Auth: n.peerAuth, Registerer: n.reg, Logger: n.log,
	})
	if err != nil {
		return err
	}
	n.place = place
	if err := n.newMesh(); err != nil {
		return err
	}
	if err := n.newHandoff(); err != nil {
		return err
	}
	phx, err := n.newPhoenixTokens(verifier)
	if err != nil {
		return err
	}
	if n.accept, err = admission.New(n.admissionConfig(verifier, phx)); err != nil {
		return err
	}
	if err := n.newPeers(); err != nil {
		return err
	}
	n.notify = notifyproto.New(notifyproto.Config{Accept: n.accept, Transport: n.loops, Hub: n.hub,
		History: n.history != nil, SendQueueBytes: cfg.SendQueueBytes})
	if n.phoenix, err = phoenix.New(phoenix.Config{
		Accept: n.accept, Hub: n.hub, Transport: n.loops, State: n.state, Relay: place,
		SendQueueBytes: cfg.SendQueueBytes, MaxMessageSize: cfg.MaxMessageSize,
		LongPollHold: cfg.LongPollHold, LongPollIdle: cfg.LongPollIdle, Logger: n.log,
	}); err != nil {
		return err
	}
	if n.pages, err = pages.New(); err != nil {
		return err
	}
	n.api = api.NewServer(apiBackend{n}, api.Config{
		APIKey: cfg.APIKey, AuthOff: cfg.apiAuthOff(), SessionCookie: cfg.Auth.SessionCookie,
		MaxPublishSize: cfg.MaxPublishSize, Logger: n.log, Registerer: n.reg,
	})
	switch {
	case cfg.apiAuthOff():
		n.log.Warn(apiAuthOffWarning, "setting", "NOTIFY_API_AUTH")
	case cfg.APIKey == "":
		n.log.Warn("NOTIFY_API_KEY is not set: the server API refuses every call but Auth")
	}
	return nil
}

// admissionConfig is the accept pipeline's configuration.
func (n *Node) admissionConfig(verifier *auth.Verifier, phx admission.Verifier) admission.Config {
	ac := admission.Config{
		Verifier: verifier, PhoenixVerifier: phx, ExpireConnections: n.cfg.Tokens.ExpireConnections,
		AllowedOrigins: n.cfg.AllowedOrigins, OpenTopics: n.cfg.OpenTopics,
		SessionCookie: n.cfg.Auth.SessionCookie, NodeName: n.cfg.NodeName,
		Hub: n.hub, Transport: n.loops, State: n.state, Owners: n.place, Registerer: n.reg, Logger: n.log,
		MaxConnections: n.maxConnections(), Relays: n.place, MaxConnectionsPerUser: n.cfg.MaxConnectionsPerUser,
	}
	if n.history != nil {
		ac.History, ac.HistoryTTL = n.history, n.cfg.History.TTL
	}
	if n.handoff != nil {
		ac.Receiver = n.handoff
	}
	if r := n.perChannel(); r != nil {
		ac.Subscriptions = r // a handshake waits for its channels before it reads the state
	}
	return ac
}

// perChannel is the Redis broker when it subscribes per user and topic
// (NOTIFY_SUBSCRIBE_MODE=user or sharded), else nil.
func (n *Node) perChannel() *broker.Redis {
	if r, ok := n.broker.(*broker.Redis); ok && broker.SubscribeMode(n.cfg.SubscribeMode).PerChannel() {
		return r
	}
	return nil
}

// newHandoff builds the hand-off of undelivered messages when a webhook is
// configured (Validate made sure history is on then).
func (n *Node) newHandoff() error {
	hc := n.cfg.Handoff
	if hc.Webhook == "" || n.history == nil {
		return nil
	}
	h, err := handoff.New(handoff.Config{
		Webhook: hc.Webhook, Secret: hc.Secret, Grace: hc.Grace, NodeName: n.cfg.NodeName,
		Owners: n.place, Broker: n.history, Registerer: n.reg, Logger: n.log,
	})
	if err != nil {
		return err
	}
	n.handoff = h
	n.hub.Watch(h)
	return nil
}

// newPeerAuth takes the cluster secret, which presence calls between nodes
// and relayed client requests are signed with.
func (n *Node) newPeerAuth() error {
	secret, err := cluster.Secret(n.cfg.ClusterSecret, n.cfg.GossipKey)
	if err != nil {
		return err
	}
	if secret == nil && len(n.cfg.Join) > 0 {
		n.log.Warn("neither NOTIFY_CLUSTER_SECRET nor NOTIFY_GOSSIP_KEY is set: nodes refuse each other's calls, so Presence fails while the cluster has other members, " +
			"and owners cannot tell relayed clients from direct ones (they serve them unattributed)")
	}
	n.peerAuth = cluster.NewPeerAuth(secret)
	return nil
}

func (n *Node) newPeers() error {
	var err error
	n.peers, err = peers.New(peers.Config{
		NodeName: n.cfg.NodeName, Broker: n.broker, Hub: n.hub, Directory: n.place, Relays: n.place,
		Auth: n.peerAuth, Logger: n.log,
	})
	return err
}

func (n *Node) draining() bool { return n.stopping.Load() || n.accept.Draining() }

func (n *Node) longPollHold() time.Duration {
	if n.cfg.LongPollHold > 0 {
		return n.cfg.LongPollHold
	}
	return phoenix.DefaultLongPollHold
}

// Registry is the node's metrics registry (for tests and embedding).
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Addr is the address the HTTP listener is bound to (after Start).
func (n *Node) Addr() string { return n.listeners.http.Addr().String() }

// InternalAddr is the address the internal listener is bound to (after
// Start): INTERNAL_PORT's, or the HTTP listener's when it is unset.
func (n *Node) InternalAddr() string {
	if n.listeners.internal == nil {
		return n.Addr()
	}
	return n.listeners.internal.Addr().String()
}

// pprofWhere says where pprof is served, for the start log.
func (n *Node) pprofWhere() string {
	if n.cfg.pprofInternal() {
		return "INTERNAL_PORT " + n.InternalAddr()
	}
	if n.listeners.pprof == nil {
		return "off"
	}
	return n.listeners.pprof.Addr().String()
}

// GRPCAddr is the address the gRPC listener is bound to (after Start), or ""
// when GRPC_PORT is off.
func (n *Node) GRPCAddr() string {
	if n.listeners == nil || n.listeners.grpc == nil {
		return ""
	}
	return n.listeners.grpc.Addr().String()
}

// Start binds the listeners, joins the cluster and starts every part, in
// the order they depend on each other. The node serves until Shutdown.
func (n *Node) Start() error {
	ls, err := n.listen()
	if err != nil {
		return err
	}
	c, err := n.joinCluster(ls.relayPort(), ls.internalPort())
	if err != nil {
		ls.close()
		return err
	}
	n.listeners, n.cluster = ls, c
	g := service.NewGroup()
	for _, s := range n.parts() {
		if err := g.Go(s.name, s.svc); err != nil {
			return err // cannot happen: the group is new
		}
	}
	n.services = g
	if !n.cfg.Redis.Enabled() {
		n.awaitEmbeddedBroker()
	}
	n.log.Info("notify node started", "addr", n.Addr(), "internal", n.InternalAddr(), "grpc", n.GRPCAddr(),
		"node", n.cfg.NodeName, "broker", n.brokerName(), "pprof", n.pprofWhere())
	return nil
}

// awaitEmbeddedBroker waits (briefly) until the embedded broker's Run has
// taken its handler: it delivers synchronously, so a publish made right
// after Start would otherwise reach nobody. (Redis gets no such wait: it
// may be down at start; /readyz says when it delivers.)
func (n *Node) awaitEmbeddedBroker() {
	for deadline := time.Now().Add(time.Second); n.broker.Ready() != nil && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

type part struct {
	name string
	svc  service.Service
}

// parts are the node's long-running parts in start order; they stop in
// reverse: the listeners first, the event loops last.
func (n *Node) parts() []part {
	public, internal := n.routes()
	return []part{
		{"jwks", n.jwks},
		{"transport", service.Func(func(ctx context.Context) error {
			<-ctx.Done()
			n.loops.Close() // every remaining socket, at once
			return nil
		})},
		{"broker", service.Func(func(ctx context.Context) error {
			err := n.broker.Run(ctx, brokerHandler{n.hub, n.peers})
			return errors.Join(err, n.closeBroker())
		})},
		{"cluster", n.cluster},
		{"placement", n.place},
		{"peers", n.peers},
		{"phoenix", n.phoenix},
		{"handoff", n.handoffService()},
		{"grpc", n.listeners.grpcService(n.api, n.log)},
		{"pprof", n.listeners.pprofService(n.log)},
		{"internal", n.listeners.internalService(internal, n.log)},
		{"http", n.listeners.httpService(public, n.log)},
	}
}

func (n *Node) handoffService() service.Service {
	if n.handoff == nil {
		return idle
	}
	return n.handoff
}

// joinCluster creates this node's member and joins the cluster; relays
// reach this node on relayPort, peers' calls on internalPort (advertised
// even when it is PORT's: AdvertiseRelayPort then changes relays only).
func (n *Node) joinCluster(relayPort, internalPort int) (*cluster.Cluster, error) {
	if n.cfg.AdvertiseRelayPort != 0 {
		relayPort = n.cfg.AdvertiseRelayPort
	}
	c, err := cluster.New(cluster.Config{
		NodeName:       n.cfg.NodeName,
		BindAddr:       n.cfg.GossipAddr,
		AdvertiseAddr:  n.cfg.AdvertiseAddr,
		Join:           n.cfg.Join,
		GossipKey:      n.cfg.GossipKey,
		Label:          n.cfg.ClusterLabel,
		RelayPort:      relayPort,
		InternalPort:   internalPort,
		RingHash:       n.place.Ring().Config().Hash(),
		RejoinInterval: n.cfg.RejoinEvery,
		Local:          n.cfg.GossipLocal,
		Logger:         n.log,
	}, n.place.OnMembership)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Join(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("join cluster: %w", err)
	}
	return c, nil
}

func (n *Node) brokerName() string { return n.cfg.brokerKind() }

// Run starts the node and serves until ctx ends or a part fails, then
// drains and stops.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(); err != nil {
		return err
	}
	var failed error
	select {
	case <-ctx.Done():
		n.log.Info("stopping: draining connections", "drain_timeout", n.cfg.DrainTimeout.String(), "connections", n.hub.Open())
	case f := <-n.services.Failed():
		failed = f
		n.log.Error("a part of the node failed; stopping", "part", f.Name, "err", f.Err)
	}
	return errors.Join(failed, n.Shutdown(context.Background()))
}

// Shutdown drains the node: readiness goes false, new connections are
// refused, open ones are closed with 1012 "shutdown" spread over the drain
// timeout; then every part stops, in reverse order of start. ctx bounds the
// wait. A node that was never started is released.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.shutdown(ctx) })
	return n.stopErr
}

func (n *Node) shutdown(ctx context.Context) error {
	if n.services == nil {
		n.loops.Close()
		return n.closeBroker()
	}
	n.stopping.Store(true)
	n.api.SetServing(false)
	n.awaitDrainDelay(ctx)
	n.accept.SetDraining()
	if n.place.Relayed() > 0 {
		// Clients relayed through this node are closed by their owners,
		// whose close frames pass through the relay.
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := n.peers.AnnounceDrain(actx); err != nil {
			n.log.Warn("cannot ask owners to close relayed connections", "err", err)
		}
		cancel()
	}
	// The others drop this node from their rings at once, so clients that
	// reconnect land on the new owners.
	if err := n.cluster.Leave(2 * time.Second); err != nil {
		n.log.Warn("cluster leave", "err", err)
	}
	n.meshLeave(ctx)
	n.drain(ctx)
	err := n.services.Stop(ctx)
	n.log.Info("notify node stopped")
	return err
}

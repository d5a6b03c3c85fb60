package node

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/auth/phxtoken"
	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/flagext"
	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/ring"
	"github.com/notify-dev/notify/transport"
)

// Config is everything a node is configured with. Every field is a flag and,
// through the command, the environment variable of the same name.
type Config struct {
	Port           string // PORT: HTTP listener
	InternalPort   string // INTERNAL_PORT: metrics, /cluster, node-to-node, pprof; empty = on PORT
	PprofPort      string // PPROF_PORT: pprof listener, "off" disables; empty = see pprofAddr
	GRPCPort       string // GRPC_PORT: gRPC listener, "off" disables
	APIKey         string // NOTIFY_API_KEY: bearer key of the server API
	APIAuth        string // NOTIFY_API_AUTH: on, or off for no key at all (the older services)
	MaxPublishSize int    // NOTIFY_MAX_PUBLISH_SIZE
	Auth           auth.Config
	Redis          broker.RedisConfig
	Broker         string               // NOTIFY_BROKER: redis, cluster or memory; empty = brokerKind's default
	SubscribeMode  string               // NOTIFY_SUBSCRIBE_MODE: pattern, user or sharded; empty = pattern
	Tokens         TokenConfig          // NOTIFY_EXPIRE_CONNECTIONS, NOTIFY_REFRESH_NOTICE, NOTIFY_PHOENIX_*
	AllowedOrigins flagext.StringSlice  // NOTIFY_ALLOWED_ORIGINS
	OpenTopics     bool                 // NOTIFY_OPEN_TOPICS
	PingInterval   time.Duration        // NOTIFY_PING_INTERVAL
	MaxMessageSize int                  // NOTIFY_MAX_MESSAGE_SIZE
	SendQueueBytes int                  // NOTIFY_SEND_QUEUE_BYTES
	MaxConnections int                  // NOTIFY_MAX_CONNECTIONS: 0 = from the open files limit (maxConnections)
	NodeName       string               // NOTIFY_NODE_NAME
	DrainTimeout   time.Duration        // NOTIFY_DRAIN_TIMEOUT
	DrainDelay     time.Duration        // NOTIFY_DRAIN_DELAY
	GossipAddr     string               // NOTIFY_GOSSIP_ADDR
	AdvertiseAddr  string               // NOTIFY_ADVERTISE_ADDR
	Join           flagext.StringSlice  // NOTIFY_JOIN
	GossipKey      string               // NOTIFY_GOSSIP_KEY
	ClusterLabel   string               // NOTIFY_CLUSTER_LABEL
	ClusterSecret  string               // NOTIFY_CLUSTER_SECRET: nodes authenticate each other with it
	RebalanceRate  float64              // NOTIFY_REBALANCE_RATE
	History        broker.HistoryConfig // NOTIFY_HISTORY_SIZE, NOTIFY_HISTORY_TTL
	Handoff        HandoffConfig        // NOTIFY_UNDELIVERED_WEBHOOK, _GRACE, NOTIFY_WEBHOOK_SECRET

	// NOTIFY_MAX_CONNECTIONS_PER_USER: 0 = unlimited; enforced by the owner.
	MaxConnectionsPerUser int

	// Not settings: tuning for tests and benchmarks.
	CloseTimeout  time.Duration // how long a closing handshake may take (transport default)
	Loops         int           // event loops (default one per CPU)
	ProbeInterval time.Duration // Redis probe period (broker default)
	// UnsubscribeDelay: how long a channel stays subscribed after its
	// last client left (NOTIFY_SUBSCRIBE_MODE=user; broker default).
	UnsubscribeDelay time.Duration
	GossipLocal      bool          // memberlist's loopback timings
	RejoinEvery      time.Duration // rejoin period (cluster default)
	Ring             ring.Config   // zero: ring.DefaultConfig()
	LongPollHold     time.Duration // how long a poll waits for messages (default 10s)
	LongPollIdle     time.Duration // no poll for this long ends a session (default 25s)
	HeaderTimeout    time.Duration // how long PORT waits for a request's header (default 10s)
	// AdvertiseRelayPort is the relay port told to peers instead of PORT's:
	// how a test makes this node unreachable for relays only.
	AdvertiseRelayPort int
	// MeshRetry is how long the cluster broker retries a peer (default
	// 5s), MeshReadyGrace how long one of its links may be down before
	// /readyz fails (default 10s).
	MeshRetry, MeshReadyGrace time.Duration
}

// DefaultConfig returns the defaults of the contract (DESIGN.md section 2).
func DefaultConfig() Config {
	var c Config
	fs := flag.NewFlagSet("defaults", flag.ContinueOnError)
	c.RegisterFlags(fs)
	return c
}

// RegisterFlags registers every setting on fs, with its default.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&c.Port, "port", ":3000", "HTTP listener for WebSocket, API, metrics, health and pages (3000 and :3000 both work)")
	fs.StringVar(&c.InternalPort, "internal-port", "", "listener for /metrics, /cluster, the calls between nodes and pprof, so that PORT serves only clients, the API, health and the demo page; empty = all on PORT")
	fs.StringVar(&c.PprofPort, "pprof-port", "", `net/http/pprof listener; "off" disables it; empty = on INTERNAL_PORT when that is set, else `+defaultPprofAddr)
	fs.StringVar(&c.GRPCPort, "grpc-port", ":8080", `gRPC listener (NotifyService, NotificationsService, health, reflection); "off" disables it`)
	fs.StringVar(&c.APIKey, "notify-api-key", "", "bearer key for the server API; every method but Auth is refused while it is unset")
	fs.StringVar(&c.APIAuth, "notify-api-auth", "on", `"off" serves the API (Twirp and gRPC) without a key, as the older services did behind a private network; Authorization is then ignored`)
	fs.IntVar(&c.MaxPublishSize, "notify-max-publish-size", 65536, "largest payload the API publishes, in bytes")
	c.Auth.RegisterFlags(fs)
	c.Redis.RegisterFlags(fs)
	fs.StringVar(&c.SubscribeMode, "notify-subscribe-mode", "pattern", `what a node subscribes to on Redis: "pattern" (PSUBSCRIBE notify:* notify_topic:*, every node reads every message) or "user" (SUBSCRIBE to the channel of each user and topic with a client on the node, so a message reaches only the nodes serving it and PUBLISH answers 0 for a user connected nowhere) or "sharded" (Redis Cluster only: as "user" with SSUBSCRIBE on the master of each channel's slot; applications publish with SPUBLISH)`)
	fs.StringVar(&c.Broker, "notify-broker", "", `"redis", "cluster" (no Redis: the nodes carry publishes to each other; needs NOTIFY_CLUSTER_SECRET and NOTIFY_HISTORY_SIZE=0) or "memory" (no Redis: publishes reach the node they are made on only); empty = redis when Redis is configured, else cluster when NOTIFY_JOIN is set, else memory`)
	c.Tokens.RegisterFlags(fs)
	fs.Var(&c.AllowedOrigins, "notify-allowed-origins", "comma-separated Origin allowlist for browsers, e.g. https://app.example.com,https://*.example.com; empty allows any")
	fs.BoolVar(&c.OpenTopics, "notify-open-topics", false, "let any client join any topic, not only those its token's topics claim lists")
	fs.DurationVar(&c.PingInterval, "notify-ping-interval", 25*time.Second, "server ping interval; a connection silent for 2 intervals is closed")
	fs.IntVar(&c.MaxMessageSize, "notify-max-message-size", 4096, "largest client frame accepted in bytes (close 1009 above it)")
	fs.IntVar(&c.SendQueueBytes, "notify-send-queue-bytes", 262144, "unsent bytes per connection before the client is cut as slow (close 4008)")
	fs.IntVar(&c.MaxConnectionsPerUser, "notify-max-connections-per-user", 0, "connections one user may hold in the whole cluster, enforced exactly by the user's owner (more are refused with 429); 0 = unlimited")
	fs.IntVar(&c.MaxConnections, "notify-max-connections", 0, "client descriptors this node holds before new connections get 503 with Retry-After (a relayed client holds two on the node it lands on); 0 = the open files limit less 5% (at least 64, at most 1024) for the node's own")
	fs.StringVar(&c.NodeName, "notify-node-name", host, "unique member name of this node")
	fs.DurationVar(&c.DrainTimeout, "notify-drain-timeout", 20*time.Second, "how long a stopping node spreads its connection closes over")
	fs.DurationVar(&c.DrainDelay, "notify-drain-delay", 0, "how long a stopping node keeps accepting connections with /readyz at 503 before it leaves and drains, so a load balancer takes it out first (a few health-check intervals; on Kubernetes the preStop pause does this)")
	fs.StringVar(&c.GossipAddr, "notify-gossip-addr", ":7946", "memberlist bind address (TCP and UDP)")
	fs.StringVar(&c.AdvertiseAddr, "notify-advertise-addr", "", "address peers use to reach this node, host or host:port (gossip; relays use the same host and PORT); empty = derived")
	fs.Var(&c.Join, "notify-join", "comma-separated seeds: host:port or dns+name:port (every address of name), re-resolved periodically")
	fs.StringVar(&c.GossipKey, "notify-gossip-key", "", "base64 AES key (16, 24 or 32 bytes) encrypting gossip")
	fs.StringVar(&c.ClusterLabel, "notify-cluster-label", "notify", "memberlist label; nodes of other clusters are refused")
	fs.StringVar(&c.ClusterSecret, "notify-cluster-secret", "", "secret nodes sign their calls to each other with (at least 16 bytes); empty = derived from NOTIFY_GOSSIP_KEY; with neither, nodes refuse each other's calls")
	fs.Float64Var(&c.RebalanceRate, "notify-rebalance-rate", 100, "connections closed per second with 1012 \"moved\" after a membership change")
	fs.IntVar(&c.History.Size, "notify-history-size", 100, "messages kept per user and per topic so that clients can resume (0 turns history off)")
	fs.DurationVar(&c.History.TTL, "notify-history-ttl", 2*time.Minute, "how long a user's or topic's history is kept after its last publish")
	c.Handoff.RegisterFlags(fs)
}

// defaultPprofAddr is pprof's listener when neither PPROF_PORT nor
// INTERNAL_PORT is set: loopback, as profiles and traces are costly to
// make and nothing else limits who asks.
const defaultPprofAddr = "127.0.0.1:6060"

// pprofAddr is the address of pprof's own listener, or "off". pprof lives
// in one place: where PPROF_PORT says; when it is empty, on the internal
// listener if there is one (reachable by the cluster and its monitoring
// only, where profilers that scrape it can reach it too), else on loopback.
func (c *Config) pprofAddr() string {
	switch {
	case c.PprofPort != "":
		return c.PprofPort
	case c.InternalPort != "":
		return "off"
	}
	return defaultPprofAddr
}

// pprofInternal: pprof's handlers are served on the internal listener.
func (c *Config) pprofInternal() bool { return c.PprofPort == "" && c.InternalPort != "" }

// apiAuthOff: NOTIFY_API_AUTH=off.
func (c *Config) apiAuthOff() bool { return c.APIAuth == "off" }

// TokenConfig is how long connections live on their tokens.
type TokenConfig struct {
	ExpireConnections bool          // NOTIFY_EXPIRE_CONNECTIONS
	RefreshNotice     time.Duration // NOTIFY_REFRESH_NOTICE
	// Phoenix.Tokens of the Elixir service, on /pubsub/*: empty secret = off.
	PhoenixSecretKeyBase string // NOTIFY_PHOENIX_SECRET_KEY_BASE (or SECRET_KEY_BASE)
	PhoenixSalt          string // NOTIFY_PHOENIX_TOKEN_SALT
	PhoenixMaxAge        int    // NOTIFY_PHOENIX_TOKEN_MAX_AGE, seconds
}

// phoenix is the Phoenix.Token verifier's config.
func (c *TokenConfig) phoenix() phxtoken.Config {
	return phxtoken.Config{SecretKeyBase: c.PhoenixSecretKeyBase, Salt: c.PhoenixSalt, MaxAge: time.Duration(c.PhoenixMaxAge) * time.Second}
}

// RegisterFlags registers the token lifetime settings on fs.
func (c *TokenConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.ExpireConnections, "notify-expire-connections", true, "close a connection with 4001 when its token expires (clients refresh in-band); false checks the token at connect only, as the older services did")
	fs.DurationVar(&c.RefreshNotice, "notify-refresh-notice", 30*time.Second, `how long before a connection's token expires it is sent {"kind":"expiring"} (0: never)`)
	fs.StringVar(&c.PhoenixSecretKeyBase, "notify-phoenix-secret-key-base", "", "the Elixir service's secret_key_base: /pubsub/* also take its Phoenix.Token client tokens (SECRET_KEY_BASE is read too); empty = JWTs only")
	fs.StringVar(&c.PhoenixSalt, "notify-phoenix-token-salt", phxtoken.DefaultSalt, "salt the Phoenix.Tokens were signed with")
	fs.IntVar(&c.PhoenixMaxAge, "notify-phoenix-token-max-age", int(phxtoken.DefaultMaxAge/time.Second), "seconds a Phoenix.Token is valid after it was signed")
}

// HandoffConfig is where messages nobody received go.
type HandoffConfig struct {
	Webhook string        // NOTIFY_UNDELIVERED_WEBHOOK: URL; empty = off
	Grace   time.Duration // NOTIFY_UNDELIVERED_GRACE
	Secret  string        // NOTIFY_WEBHOOK_SECRET
}

// RegisterFlags registers the hand-off settings on fs.
func (c *HandoffConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Webhook, "notify-undelivered-webhook", "", "URL that gets, batched and signed, the messages with history for users with no connection anywhere who do not resume within the grace; empty = off")
	fs.DurationVar(&c.Grace, "notify-undelivered-grace", 10*time.Second, "how long a user may take to connect and resume before a message is handed to the webhook")
	fs.StringVar(&c.Secret, "notify-webhook-secret", "", "HMAC-SHA256 key signing the webhook's requests (X-Notify-Signature)")
}

// Validate reports every setting out of range, naming it by its environment
// variable.
func (c *Config) Validate() error {
	v := &validation{}
	c.validateListeners(v)
	c.validateClients(v)
	c.validateCluster(v)
	return errors.Join(v.errs...)
}

// validation collects what is wrong with a config.
type validation struct{ errs []error }

func (v *validation) bad(name, value, why string) {
	v.errs = append(v.errs, fmt.Errorf("invalid %s %q: %s", name, value, why))
}

func (v *validation) err(err error) {
	if err != nil {
		v.errs = append(v.errs, err)
	}
}

func (c *Config) validateListeners(v *validation) {
	if _, err := normalizeAddr(c.Port); err != nil {
		v.bad("PORT", c.Port, err.Error())
	}
	if c.InternalPort != "" {
		if _, err := normalizeAddr(c.InternalPort); err != nil {
			v.bad("INTERNAL_PORT", c.InternalPort, err.Error()+" (or empty: on PORT)")
		}
	}
	for _, l := range []struct{ name, value string }{{"PPROF_PORT", c.PprofPort}, {"GRPC_PORT", c.GRPCPort}} {
		if l.value == "off" || (l.name == "PPROF_PORT" && l.value == "") {
			continue
		}
		if _, err := normalizeAddr(l.value); err != nil {
			v.bad(l.name, l.value, err.Error()+` (or "off")`)
		}
	}
	if c.APIAuth != "" && c.APIAuth != "on" && c.APIAuth != "off" {
		v.bad("NOTIFY_API_AUTH", c.APIAuth, `want "on" or "off"`)
	}
	if c.MaxPublishSize < 1 || c.MaxPublishSize > c.SendQueueBytes {
		v.bad("NOTIFY_MAX_PUBLISH_SIZE", strconv.Itoa(c.MaxPublishSize), "must be positive and at most NOTIFY_SEND_QUEUE_BYTES (a bigger message could never be delivered)")
	}
	v.err(c.Auth.Validate())
	v.err(c.Redis.Validate())
}

func (c *Config) validateClients(v *validation) {
	for _, o := range c.AllowedOrigins {
		if err := admission.ParseOrigin(o); err != nil {
			v.bad("NOTIFY_ALLOWED_ORIGINS", o, err.Error())
		}
	}
	if c.PingInterval < 100*time.Millisecond {
		v.bad("NOTIFY_PING_INTERVAL", c.PingInterval.String(), "must be at least 100ms")
	}
	if c.MaxMessageSize < 125 || c.MaxMessageSize > 64<<20 {
		v.bad("NOTIFY_MAX_MESSAGE_SIZE", strconv.Itoa(c.MaxMessageSize), "must be between 125 and 67108864 bytes")
	}
	if c.SendQueueBytes < 4096 || c.SendQueueBytes > 1<<30 {
		v.bad("NOTIFY_SEND_QUEUE_BYTES", strconv.Itoa(c.SendQueueBytes), "must be between 4096 and 1073741824 bytes")
	}
	if c.MaxConnectionsPerUser < 0 {
		v.bad("NOTIFY_MAX_CONNECTIONS_PER_USER", strconv.Itoa(c.MaxConnectionsPerUser), "must not be negative (0: unlimited)")
	}
	if c.MaxConnections < 0 {
		v.bad("NOTIFY_MAX_CONNECTIONS", strconv.Itoa(c.MaxConnections), "must not be negative (0: from the open files limit)")
	}
	if c.DrainTimeout < 0 {
		v.bad("NOTIFY_DRAIN_TIMEOUT", c.DrainTimeout.String(), "must not be negative")
	}
	if c.DrainDelay < 0 {
		v.bad("NOTIFY_DRAIN_DELAY", c.DrainDelay.String(), "must not be negative")
	}
	if c.Tokens.RefreshNotice < 0 {
		v.bad("NOTIFY_REFRESH_NOTICE", c.Tokens.RefreshNotice.String(), "must not be negative")
	}
	if c.Tokens.PhoenixSecretKeyBase != "" {
		pc := c.Tokens.phoenix()
		if err := pc.Validate(); err != nil {
			v.err(fmt.Errorf("NOTIFY_PHOENIX_SECRET_KEY_BASE, _TOKEN_SALT, _TOKEN_MAX_AGE: %w", err))
		}
	}
}

func (c *Config) validateCluster(v *validation) {
	if strings.TrimSpace(c.NodeName) == "" {
		v.bad("NOTIFY_NODE_NAME", c.NodeName, "must not be empty")
	}
	if _, err := normalizeAddr(c.GossipAddr); err != nil {
		v.bad("NOTIFY_GOSSIP_ADDR", c.GossipAddr, err.Error())
	}
	if _, err := cluster.DecodeKey(c.GossipKey); err != nil {
		v.err(fmt.Errorf("invalid NOTIFY_GOSSIP_KEY: %w", err))
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(j, "dns+")); err != nil {
			v.bad("NOTIFY_JOIN", j, "want host:port or dns+name:port")
		}
	}
	if c.ClusterLabel == "" || len(c.ClusterLabel) > 255 {
		v.bad("NOTIFY_CLUSTER_LABEL", c.ClusterLabel, "must be 1 to 255 bytes")
	}
	if c.ClusterSecret != "" && len(c.ClusterSecret) < 16 {
		v.bad("NOTIFY_CLUSTER_SECRET", "(not shown)", "must be at least 16 bytes")
	}
	if c.RebalanceRate <= 0 {
		v.bad("NOTIFY_REBALANCE_RATE", strconv.FormatFloat(c.RebalanceRate, 'f', -1, 64), "must be positive")
	}
	v.err(c.History.Validate())
	c.validateBroker(v)
	c.validateHandoff(v)
}

func (c *Config) validateHandoff(v *validation) {
	h := c.Handoff
	if h.Webhook == "" {
		return
	}
	if u, err := url.Parse(h.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.bad("NOTIFY_UNDELIVERED_WEBHOOK", h.Webhook, "want an http:// or https:// URL")
	}
	if !c.History.Enabled() {
		v.bad("NOTIFY_UNDELIVERED_WEBHOOK", h.Webhook, "needs history (NOTIFY_HISTORY_SIZE > 0): only messages with history are handed off")
	}
	if h.Grace < 100*time.Millisecond || h.Grace > time.Hour {
		v.bad("NOTIFY_UNDELIVERED_GRACE", h.Grace.String(), "must be 100ms to 1h")
	}
	if h.Secret == "" {
		v.bad("NOTIFY_WEBHOOK_SECRET", "", "must be set with NOTIFY_UNDELIVERED_WEBHOOK: the application checks the signature")
	}
	if c.History.TTL <= h.Grace {
		v.bad("NOTIFY_UNDELIVERED_GRACE", h.Grace.String(), "must be shorter than NOTIFY_HISTORY_TTL: a user resumes from the history within the grace")
	}
}

// transportConfig is the part of the config the transport needs.
func (c *Config) transportConfig() transport.Config {
	return transport.Config{
		PingInterval:   c.PingInterval,
		MaxMessageSize: c.MaxMessageSize,
		SendQueueBytes: c.SendQueueBytes,
		CloseTimeout:   c.CloseTimeout,
		Loops:          c.Loops,
		ExpiryNotice:   c.Tokens.RefreshNotice,
	}
}

// normalizeAddr accepts "3000", ":3000", "host:3000" and returns a listen
// address.
func normalizeAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty")
	}
	if !strings.Contains(s, ":") {
		s = ":" + s
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("want a port or host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", errors.New("port must be a number from 0 to 65535")
	}
	return s, nil
}

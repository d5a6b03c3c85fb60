// Package placement decides where users live in the cluster: the ring view
// built from the membership, the owner of a user, the relay of a misrouted
// client to its owner, the rebalance that moves clients whose owner changed,
// and the /cluster status.
package placement

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/service"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/ring"
	"github.com/notify-dev/notify/transport"

	"github.com/prometheus/client_golang/prometheus"
)

// ForwardedByHeader marks a request relayed by another node (its name),
// with its signature in cluster.RelayAuthHeader. Only a signed one is a
// relay (served where it lands, never relayed again, attributed to that
// node); anyone can send the header, so an unsigned one is a client's.
const ForwardedByHeader = "X-Notify-Forwarded-By"

// Config of a Placement.
type Config struct {
	NodeName      string
	Ring          ring.Config   // the ring settings every member must share
	RebalanceRate float64       // NOTIFY_REBALANCE_RATE: "moved" closes per second
	DrainTimeout  time.Duration // NOTIFY_DRAIN_TIMEOUT: spread of the closes a draining relay asks for
	// RequestTimeout bounds the wait for the owner's answer to a relayed
	// plain request (a long poll, held by the owner until messages come).
	RequestTimeout time.Duration
	Hub            *hub.Hub
	Transport      *transport.Server
	Draining       func() bool // whether this node is draining
	// Auth signs the requests this node relays and checks those relayed
	// here, with the cluster secret; nil: no secret (nothing is signed,
	// and a relayed request is taken for a client's).
	Auth       *cluster.PeerAuth
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Placement is this node's view of where users live.
type Placement struct {
	cfg     Config
	log     *slog.Logger
	view    atomic.Pointer[view]
	relayed atomic.Int64 // clients relayed to their owner through this node
	metrics *metrics
	proxy   *http.Transport // long-poll requests relayed to owners
	tasks   *service.Tasks  // paced closes asked for by draining relays

	changed chan struct{} // size 1: the ring changed
	recheck chan struct{} // size 1: a client was relayed here for a user another node owns
}

// view is what the node knows of the cluster at one moment. A new one is
// swapped in on every membership change; handshakes read it lock-free.
type view struct {
	ring    *ring.Ring
	members []cluster.Member
	relay   map[string]string // member on the ring -> its relay address
}

// New returns a placement in which this node is a cluster of one, until the
// membership reports.
func New(cfg Config) (*Placement, error) {
	if cfg.Hub == nil || cfg.Transport == nil || cfg.Draining == nil {
		return nil, errors.New("placement: hub, transport and draining are required")
	}
	if cfg.RebalanceRate <= 0 {
		return nil, errors.New("placement: rebalance rate must be positive")
	}
	if cfg.RequestTimeout <= 0 {
		return nil, errors.New("placement: request timeout must be positive")
	}
	if cfg.Auth == nil {
		cfg.Auth = cluster.NewPeerAuth(nil)
	}
	if cfg.Ring == (ring.Config{}) {
		cfg.Ring = ring.DefaultConfig()
	}
	r, err := ring.New(cfg.Ring, []string{cfg.NodeName})
	if err != nil {
		return nil, err
	}
	p := &Placement{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: newMetrics(cfg.Registerer),
		proxy: &http.Transport{
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.RequestTimeout,
		},
		tasks:   service.NewTasks(),
		changed: make(chan struct{}, 1),
		recheck: make(chan struct{}, 1),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.view.Store(&view{ring: r, relay: map[string]string{}})
	p.metrics.members.Set(1)
	p.metrics.partitions.Set(float64(r.Owned(cfg.NodeName)))
	return p, nil
}

// Ring returns the current ring.
func (p *Placement) Ring() *ring.Ring { return p.view.Load().ring }

// OnMembership takes every membership change (the cluster's onChange, on
// its goroutine): build the ring of the members that share our ring
// settings, swap it in, then let Run close the local clients of users now
// owned elsewhere.
func (p *Placement) OnMembership(members []cluster.Member) {
	self := p.cfg.NodeName
	var names []string
	relay := make(map[string]string, len(members))
	for _, m := range members {
		if m.MetaError != "" || m.RingHash != p.cfg.Ring.Hash() {
			continue // logged by the cluster package
		}
		names = append(names, m.Name)
		relay[m.Name] = m.RelayAddr
	}
	draining := p.cfg.Draining()
	if !draining && !slices.Contains(names, self) {
		names = append(names, self) // our own join event may still be on its way
	}
	r, err := ring.New(p.cfg.Ring, names)
	if err != nil {
		p.log.Error("cannot build the ring; keeping the previous one", "err", err)
		return
	}
	p.view.Store(&view{ring: r, members: members, relay: relay})
	p.metrics.members.Set(float64(len(members)))
	p.metrics.partitions.Set(float64(r.Owned(self)))
	p.log.Debug("ring updated", "members", r.Members(), "owned", r.Owned(self))
	if !draining {
		signal(p.changed)
	}
}

// Owner returns the member that owns user and its relay address, or ""
// when this node owns it.
func (p *Placement) Owner(user string) (name, addr string) {
	v := p.view.Load()
	owner := v.ring.Locate(user)
	if owner == "" || owner == p.cfg.NodeName {
		return "", ""
	}
	return owner, v.relay[owner]
}

// Owns reports whether this node owns user.
func (p *Placement) Owns(user string) bool {
	owner, _ := p.Owner(user)
	return owner == ""
}

// Peers returns the other members this node can reach: name and relay
// address.
func (p *Placement) Peers() []cluster.Member {
	var out []cluster.Member
	for _, m := range p.view.Load().members {
		if !m.Local && m.RelayAddr != "" {
			out = append(out, m)
		}
	}
	return out
}

// Relayed returns how many clients are relayed through this node now.
func (p *Placement) Relayed() int64 { return p.relayed.Load() }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Package mesh is the cluster broker (NOTIFY_BROKER=cluster): a Broker and
// StateStore with no Redis, the nodes carrying publishes to each other.
//
// Each node keeps one link to every other member: a persistent TCP
// connection it opens to the member's internal listener (an HTTP upgrade on
// LinkPath, signed with the cluster secret), carrying length-prefixed
// frames both ways. A user's message goes to the user's owner on the
// publishing node's ring, a topic's or a node command to every member; the
// local node delivers to its own handler directly. One writer goroutine
// per link drains a bounded queue in batches, so a user's messages
// published on one node arrive at the owner in that node's publish order.
// A member that cannot be reached is retried for Config.RetryFor, then
// what waited for it is dropped and counted.
//
// A user's state lives on its owner, in memory: calls made elsewhere are
// forwarded over the link. When the ring changes, a node hands the state of
// the users it no longer owns to their new owners; a node that leaves
// (Leave) hands over everything it has. A node that crashes loses the state
// it held.
//
// The package graph stays one-way: mesh imports broker (the in-memory
// broker it delivers through and keeps state in), cluster (members, the
// cluster secret) and ring, and declares the two small interfaces it needs
// of the node's placement.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/service"
	"github.com/notify-dev/notify/ring"
)

const (
	// LinkPath is where a node takes its peers' links (on its internal
	// listener: cluster.Member.PeerAddr).
	LinkPath = "/cluster/mesh"
	// Protocol is the Upgrade token of a link; a new framing gets a new one.
	Protocol = "notify-mesh/1"
	// AckedHeader, on the 101 answer, is the last sequence number of the
	// link's epoch the peer delivered: the opener resends what follows.
	AckedHeader = "X-Notify-Mesh-Acked"
)

// Tuning: the timeouts of a link and the bounds of what it holds.
const (
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = time.Second
	dialTimeout    = 2 * time.Second
	writeTimeout   = 5 * time.Second
	pingEvery      = 500 * time.Millisecond
	readTimeout    = 3 * time.Second // six pings unanswered
	readBuffer     = 64 << 10
	writeBuffer    = 64 << 10
	maxBatch       = 4096 // messages per write
	maxCalls       = 4096 // state calls in flight per link
	maxSenders     = 1024 // peers remembered (inbound links)
	reconcileEvery = 200 * time.Millisecond
	settleAfter    = time.Second // a second hand-over scan after a ring change
	failFastAfter  = time.Second // a link down this long fails state calls at once
	// maxFrameIn bounds what a link reads: a frame is at most what a node
	// with the largest NOTIFY_MAX_PUBLISH_SIZE (NOTIFY_SEND_QUEUE_BYTES,
	// 1 GiB at most) may send, plus room. Each node sends by its own
	// bound; reading by ours would break the link on every resend of a
	// message a peer with a larger setting took.
	maxFrameIn = 1<<30 + 4<<20
	// maxKeptBuffer: a read buffer grown larger for one frame is let go
	// after it, so that a rare big message does not pin its size per link.
	maxKeptBuffer = 1 << 20
)

// RingView is this node's current ring (placement implements it).
type RingView interface {
	Ring() *ring.Ring
}

// Directory lists the other members and their addresses (placement).
type Directory interface {
	Peers() []cluster.Member
}

// Config of a Mesh.
type Config struct {
	NodeName  string
	Ring      RingView
	Directory Directory
	Auth      *cluster.PeerAuth // signs the links this node opens, checks those it takes
	// MaxPayload is the largest payload published (NOTIFY_MAX_PUBLISH_SIZE):
	// frames are bounded by it (plus room for node commands and state).
	MaxPayload int
	// QueueBytes bounds what waits for one peer (default 64 MiB); a
	// message beyond it is dropped.
	QueueBytes int
	// RetryFor is how long messages wait for a peer that cannot be
	// reached before they are dropped (default 5s).
	RetryFor time.Duration
	// ReadyGrace is how long a link to a member may be down before Ready
	// fails (default 10s: longer than gossip takes to drop a crashed member).
	ReadyGrace time.Duration
	// CallTimeout bounds a state call forwarded to the owner (default 3s).
	CallTimeout time.Duration
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
}

// Mesh is the cluster broker of one node.
type Mesh struct {
	cfg      Config
	log      *slog.Logger
	local    *broker.Memory // this node's deliveries (serialised) and owned users' state
	metrics  *metrics
	maxFrame int            // the largest frame this node sends
	tasks    *service.Tasks // the links, the inbound connections, the hand-overs
	running  atomic.Bool
	leaving  atomic.Bool
	moves    chan struct{} // size 1: hand the state of users owned elsewhere over

	mu    sync.RWMutex
	links map[string]*link // peer name -> its link; guarded by mu
	ended bool             // Run has ended: no new links; guarded by mu

	inMu    sync.Mutex
	senders map[string]*sender // peer name -> its inbound link; guarded by inMu
}

var (
	_ broker.Broker     = (*Mesh)(nil)
	_ broker.StateStore = (*Mesh)(nil)
)

// New returns a mesh; Run starts its links.
func New(cfg Config) (*Mesh, error) {
	if cfg.NodeName == "" || cfg.Ring == nil || cfg.Directory == nil || cfg.Auth == nil {
		return nil, errors.New("mesh: node name, ring, directory and auth are required")
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 64 << 20
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 5 * time.Second
	}
	if cfg.ReadyGrace <= 0 {
		cfg.ReadyGrace = 10 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 3 * time.Second
	}
	m := &Mesh{
		cfg: cfg, log: cfg.Logger,
		maxFrame: min(max(cfg.MaxPayload, 0)+2<<20, maxFrameIn),
		tasks:    service.NewTasks(),
		moves:    make(chan struct{}, 1),
		links:    make(map[string]*link),
		senders:  make(map[string]*sender),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("component", "mesh")
	var err error
	if m.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	m.local = broker.NewMemory(cfg.Registerer, broker.HistoryConfig{})
	return m, nil
}

// Run delivers to h what this node publishes for itself and what its peers
// send, keeps a link to every member, and hands state over as the ring
// changes, until ctx ends. Then (after a last hand-over when leaving) it
// closes every link, dropping and counting what they still held, and
// returns once everything it started has ended. It runs once.
func (m *Mesh) Run(ctx context.Context, h broker.Handler) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("mesh: Run already ran")
	}
	lctx, stopLocal := context.WithCancel(context.Background())
	defer stopLocal()
	localDone := make(chan error, 1)
	go func() { localDone <- m.local.Run(lctx, h) }()
	m.tasks.Go(m.mover)
	m.loop(ctx)
	m.finish()
	stopLocal()
	return <-localDone
}

// loop keeps the links in step with the membership and notices ring
// changes.
func (m *Mesh) loop(ctx context.Context) {
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	last := m.cfg.Ring.Ring()
	for {
		m.reconcile()
		if r := m.cfg.Ring.Ring(); r != last {
			last = r
			signal(m.moves)
			settle.Reset(settleAfter)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-settle.C:
			// Calls made on older views may have landed here meanwhile.
			signal(m.moves)
		}
	}
}

// finish ends Run: a leaving node hands over what was written here since
// Leave, then every link closes.
func (m *Mesh) finish() {
	if r := m.ringWithoutSelf(); r != nil && m.leaving.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		m.handOver(ctx, r)
		cancel()
	}
	m.mu.Lock()
	m.ended = true
	m.mu.Unlock()
	m.tasks.Stop()
	m.mu.Lock()
	clear(m.links)
	m.mu.Unlock()
}

// reconcile opens a link to each member that has none and closes those of
// members that left.
func (m *Mesh) reconcile() {
	peers := m.cfg.Directory.Peers()
	want := make(map[string]string, len(peers))
	for _, p := range peers {
		want[p.Name] = p.PeerAddr()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, l := range m.links {
		if _, ok := want[name]; !ok {
			delete(m.links, name)
			l.close()
		}
	}
	for name, addr := range want {
		if l := m.links[name]; l != nil {
			l.setAddr(addr)
		} else {
			m.startLinkLocked(name, addr)
		}
	}
}

// startLinkLocked starts a link to peer; nil once Run has ended. m.mu must
// be held.
func (m *Mesh) startLinkLocked(peer, addr string) *link {
	if m.ended || !m.running.Load() {
		return nil
	}
	l := newLink(m, peer, addr)
	if !m.tasks.Go(l.run) {
		return nil
	}
	m.links[peer] = l
	return l
}

// linkTo returns the link to peer, opening it when the membership lists a
// member of that name that reconcile has not seen yet.
func (m *Mesh) linkTo(peer string) (*link, error) {
	m.mu.RLock()
	l := m.links[peer]
	m.mu.RUnlock()
	if l != nil {
		return l, nil
	}
	for _, p := range m.cfg.Directory.Peers() {
		if p.Name != peer {
			continue
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if l = m.links[peer]; l == nil {
			l = m.startLinkLocked(peer, p.PeerAddr())
		}
		if l == nil {
			return nil, errors.New("mesh not running")
		}
		return l, nil
	}
	return nil, fmt.Errorf("%s is not a member", peer)
}

// ownerOf is the user's owner on this node's ring; "" when it is this node.
func (m *Mesh) ownerOf(user string) string {
	if o := m.cfg.Ring.Ring().Locate(user); o != m.cfg.NodeName {
		return o
	}
	return ""
}

// Ready returns nil while the local delivery runs and no link to a member
// has been down for longer than the grace.
func (m *Mesh) Ready() error {
	if err := m.local.Ready(); err != nil {
		return err
	}
	now := time.Now()
	var down []string
	m.mu.RLock()
	for peer, l := range m.links {
		if d, err := l.downFor(now); d >= m.cfg.ReadyGrace {
			down = append(down, fmt.Sprintf("%s for %s (%v)", peer, d.Round(100*time.Millisecond), err))
		}
	}
	m.mu.RUnlock()
	if len(down) > 0 {
		slices.Sort(down)
		return fmt.Errorf("mesh links down: %s", strings.Join(down, "; "))
	}
	return nil
}

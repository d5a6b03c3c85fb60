// Package cluster is the membership of notify nodes: gossip through
// hashicorp/memberlist, compact versioned metadata, periodic rejoin from the
// seed addresses (so a split cluster heals), and Run, which applies changes
// and tells the node.
//
// Lifecycle: New binds the gossip port, Join makes the first join, Run
// applies changes and rejoins until its context ends and then shuts gossip
// down; Leave, while Run runs, tells the others first. Close is for a Cluster
// whose Run never ran.
package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/notify-dev/notify/internal/service"
)

// Config of the membership.
type Config struct {
	NodeName       string   // NOTIFY_NODE_NAME, unique in the cluster
	BindAddr       string   // NOTIFY_GOSSIP_ADDR, host:port (port 0 picks one)
	AdvertiseAddr  string   // NOTIFY_ADVERTISE_ADDR, host or host:port; empty: derived
	Join           []string // NOTIFY_JOIN: host:port or dns+name:port
	GossipKey      string   // NOTIFY_GOSSIP_KEY, base64 AES key of 16, 24 or 32 bytes
	Label          string   // NOTIFY_CLUSTER_LABEL
	RelayPort      int      // the HTTP port peers relay clients to
	InternalPort   int      // the port peers call internal endpoints on (INTERNAL_PORT); 0: none, RelayPort
	RingHash       string   // of this node's ring settings
	RejoinInterval time.Duration
	// Local uses memberlist's loopback timings (quick failure detection),
	// for tests and benchmarks on one machine.
	Local  bool
	Logger *slog.Logger
}

// DecodeKey checks and decodes a gossip key.
func DecodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64")
	}
	if n := len(k); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("decodes to %d bytes, want 16, 24 or 32", n)
	}
	return k, nil
}

// Member is one node as this node sees it.
type Member struct {
	Name       string `json:"name"`
	GossipAddr string `json:"gossip_addr"`
	RelayAddr  string `json:"relay_addr"`
	RingHash   string `json:"ring_hash"`
	State      string `json:"state"` // alive or suspect
	Local      bool   `json:"local,omitempty"`
	MetaError  string `json:"meta_error,omitempty"` // its metadata could not be read
	// InternalAddr is where it takes node-to-node calls; empty when it
	// advertises none (an older node): PeerAddr falls back to RelayAddr.
	InternalAddr string `json:"internal_addr,omitempty"`
}

// PeerAddr is the host:port other nodes call m's internal endpoints at
// (presence): its internal listener, or its HTTP listener when it
// advertises no internal one, as a node without INTERNAL_PORT serves them
// there.
func (m Member) PeerAddr() string {
	if m.InternalAddr != "" {
		return m.InternalAddr
	}
	return m.RelayAddr
}

// ErrDuplicateName is returned by Join when another member has this name.
var ErrDuplicateName = errors.New("node name already in use")

// errClosed: gossip is shut down.
var errClosed = errors.New("cluster: gossip is shut down")

// Cluster is this node's view of the membership.
type Cluster struct {
	cfg      Config
	log      *slog.Logger
	list     *memberlist.Memberlist
	onChange func([]Member)

	// Filled by memberlist's callbacks (under its lock): copies only.
	evMu     sync.Mutex
	events   []event
	conflict string
	signal   chan struct{} // size 1: events are pending

	mu      sync.Mutex
	members map[string]Member
	joined  bool
	joinErr error

	// lifeMu orders Run, Leave and the shutdown of gossip: memberlist panics
	// on a Leave after its Shutdown.
	lifeMu sync.Mutex
	ran    bool // Run has started; guarded by lifeMu
	down   bool // gossip is shut down; guarded by lifeMu
}

type event struct {
	kind memberlist.NodeEventType
	m    Member
}

// New creates the member and binds its gossip port. It starts no goroutine of
// its own (memberlist's run until gossip is shut down, by Run or Close). Join
// joins, Run keeps the view: onChange receives every new view, from Run's
// goroutine, in order.
func New(cfg Config, onChange func([]Member)) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = 30 * time.Second
	}
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "cluster"),
		onChange: onChange,
		signal:   make(chan struct{}, 1),
		members:  make(map[string]Member),
	}
	mc, err := c.memberlistConfig()
	if err != nil {
		return nil, err
	}
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.BindAddr, err)
	}
	c.list = list
	// Our own metadata needs our advertised address, which memberlist knows
	// only once created: refresh it now.
	if err := c.list.UpdateNode(time.Second); err != nil {
		c.log.Debug("update node metadata", "err", err)
	}
	return c, nil
}

// memberlistConfig turns c.cfg into memberlist's configuration, with c's
// delegates.
func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	cfg := c.cfg
	mc := memberlist.DefaultLANConfig()
	// A member falsely declared dead (a lossy, slow network: its refutation
	// lost) hears of it at the latest at its next full state exchange and
	// refutes; at the LAN default of 30 s it stayed out for up to that long
	// (test/fault lossy-peers saw 18 s). A push/pull every 5 s costs one
	// short TCP exchange of the member list per node, little at our sizes.
	mc.PushPullInterval = 5 * time.Second
	if cfg.Local {
		mc = memberlist.DefaultLocalConfig()
	}
	mc.Name = cfg.NodeName
	host, port, err := splitHostPort(cfg.BindAddr, 7946)
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_GOSSIP_ADDR %q: %w", cfg.BindAddr, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	if mc.BindAddr == "" {
		mc.BindAddr = "0.0.0.0"
	}
	if cfg.AdvertiseAddr != "" {
		ah, ap, err := splitHostPort(cfg.AdvertiseAddr, port)
		if err != nil {
			return nil, fmt.Errorf("NOTIFY_ADVERTISE_ADDR %q: %w", cfg.AdvertiseAddr, err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	key, err := DecodeKey(cfg.GossipKey)
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_GOSSIP_KEY: %w", err)
	}
	mc.SecretKey = key
	mc.Label = cfg.Label
	// A restarted StatefulSet pod comes back under the same name at once.
	mc.DeadNodeReclaimTime = 5 * time.Second
	mc.Logger = newMemberlistLogger(c.log)
	mc.Delegate = metaDelegate{c}
	mc.Events = eventDelegate{c}
	mc.Conflict = conflictDelegate{c}
	return mc, nil
}

// meta is this node's metadata; the relay and internal hosts are the
// address memberlist advertises, so peers reach all of them on the same
// interface.
func (c *Cluster) meta() Meta {
	host := ""
	if c.list != nil {
		host = c.list.LocalNode().Addr.String()
	}
	m := Meta{RelayAddr: net.JoinHostPort(host, strconv.Itoa(c.cfg.RelayPort)), RingHash: c.cfg.RingHash}
	if c.cfg.InternalPort != 0 {
		m.InternalAddr = net.JoinHostPort(host, strconv.Itoa(c.cfg.InternalPort))
	}
	return m
}

// GossipAddr is the address other members reach this one at.
func (c *Cluster) GossipAddr() string { return c.list.LocalNode().Address() }

// Join makes the first join: with no seed the node is a cluster of one at
// once, else it contacts the seeds. It fails only when another member has
// this node's name (ErrDuplicateName; Close the Cluster then). Other failures
// are retried by Run and reported by Joined. The membership events the join
// brings wait for Run, which applies them first. Call it before Run.
func (c *Cluster) Join(ctx context.Context) error {
	if len(c.cfg.Join) == 0 {
		c.setJoined(nil)
		return nil
	}
	if err := c.join(ctx); errors.Is(err, ErrDuplicateName) {
		return err
	}
	return nil
}

// Run applies membership changes (onChange sees every new view, from this
// goroutine) and rejoins from the seeds until ctx ends: quickly while the node
// has not joined, then every RejoinInterval. Then it shuts gossip down, without
// a Leave (call Leave before, to tell the others), and returns nil once every
// goroutine it started has ended; a join attempt in flight is waited for (it
// is bounded by memberlist's TCP timeout). Run runs at most once, and not
// after Close.
func (c *Cluster) Run(ctx context.Context) error {
	if err := c.begin(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.rejoinLoop(ctx) })
	c.applyLoop(ctx)
	wg.Wait()
	return c.shutdown()
}

// begin marks Run as started, refusing a second Run and a Run after Close.
func (c *Cluster) begin() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch {
	case c.down:
		return errClosed
	case c.ran:
		return errors.New("cluster: Run already ran")
	}
	c.ran = true
	return nil
}

// Joined returns nil once the node has joined its cluster, else why not.
func (c *Cluster) Joined() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joined {
		return nil
	}
	if c.joinErr != nil {
		return c.joinErr
	}
	return errors.New("joining")
}

func (c *Cluster) setJoined(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.joined = true
	}
	c.joinErr = err
}

// join contacts the seeds that are not members yet. A seed that is this very
// node counts as joined (the first pod of a StatefulSet finds only itself).
func (c *Cluster) join(ctx context.Context) error {
	addrs, err := c.resolveSeeds(ctx)
	if err != nil && len(addrs) == 0 {
		c.setJoined(fmt.Errorf("resolve NOTIFY_JOIN: %w", err))
		return err
	}
	self := c.list.LocalNode().Address()
	known := map[string]bool{}
	c.mu.Lock()
	for _, m := range c.members {
		known[m.GossipAddr] = true
	}
	c.mu.Unlock()
	var targets []string
	selfSeed := false
	for _, a := range addrs {
		switch {
		case a == self:
			selfSeed = true
		case !known[a]:
			targets = append(targets, a)
		}
	}
	if len(targets) == 0 {
		if selfSeed || len(known) > 1 {
			c.setJoined(nil)
			return nil
		}
		err := fmt.Errorf("NOTIFY_JOIN resolves to no address (%v)", c.cfg.Join)
		c.setJoined(err)
		return err
	}
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	if len(targets) > 5 {
		targets = targets[:5] // one live seed is enough; a few cover a dead one
	}
	n, err := c.list.Join(targets)
	if dup := c.duplicate(); dup != "" {
		return fmt.Errorf("%w: %s", ErrDuplicateName, dup)
	}
	if n > 0 || selfSeed {
		c.setJoined(nil)
		return nil
	}
	if err == nil {
		err = errors.New("no seed answered")
	}
	err = fmt.Errorf("join %v: %w", targets, err)
	c.setJoined(err)
	return err
}

func (c *Cluster) duplicate() string {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	return c.conflict
}

// resolveSeeds turns NOTIFY_JOIN into gossip addresses: "host:port" as is
// (memberlist resolves names), "dns+name:port" to every address of name.
func (c *Cluster) resolveSeeds(ctx context.Context) ([]string, error) {
	var out []string
	var errs []error
	for _, s := range c.cfg.Join {
		name, ok := strings.CutPrefix(s, "dns+")
		if !ok {
			out = append(out, s)
			continue
		}
		host, port, err := net.SplitHostPort(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := net.DefaultResolver.LookupHost(rctx, host)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), errors.Join(errs...)
}

// rejoinLoop retries a failed join quickly and, once joined, rejoins
// periodically until ctx ends: halves of a split cluster never merge by
// themselves.
func (c *Cluster) rejoinLoop(ctx context.Context) {
	if len(c.cfg.Join) == 0 {
		return
	}
	retry := time.Second
	for {
		wait := c.cfg.RejoinInterval
		if c.Joined() != nil {
			wait = retry
			retry = min(2*retry, c.cfg.RejoinInterval)
		}
		if !service.Sleep(ctx, wait) {
			return
		}
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.join(jctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			c.log.Warn("cluster join failed, retrying", "err", err)
		}
	}
}

// applyLoop applies the queued membership events, those queued before it
// started first, until ctx ends.
func (c *Cluster) applyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.signal:
		}
		c.apply()
	}
}

// apply turns memberlist's queued events into a view for the node.
func (c *Cluster) apply() {
	c.evMu.Lock()
	evs := c.events
	c.events = nil
	c.evMu.Unlock()
	c.mu.Lock()
	for _, e := range evs {
		switch e.kind {
		case memberlist.NodeJoin, memberlist.NodeUpdate:
			if old, ok := c.members[e.m.Name]; !ok || old != e.m {
				c.logChange(e, ok)
			}
			c.members[e.m.Name] = e.m
		case memberlist.NodeLeave:
			if _, ok := c.members[e.m.Name]; ok {
				c.log.Info("member left or failed", "member", e.m.Name, "addr", e.m.GossipAddr)
			}
			delete(c.members, e.m.Name)
		}
	}
	view := c.viewLocked()
	c.mu.Unlock()
	if c.onChange != nil {
		c.onChange(view)
	}
}

func (c *Cluster) logChange(e event, known bool) {
	switch {
	case e.m.MetaError != "":
		c.log.Warn("member metadata unreadable; kept off the ring", "member", e.m.Name, "err", e.m.MetaError)
	case e.m.RingHash != c.cfg.RingHash:
		c.log.Warn("member has other ring settings; kept off the ring", "member", e.m.Name, "its_ring_hash", e.m.RingHash, "ours", c.cfg.RingHash)
	case !known:
		c.log.Info("member joined", "member", e.m.Name, "addr", e.m.GossipAddr, "relay", e.m.RelayAddr, "internal", e.m.PeerAddr())
	}
}

func (c *Cluster) viewLocked() []Member {
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Members returns the current view, sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.viewLocked()
}

// Leave tells the others this node is going, so they drop it at once,
// waiting up to timeout for the message to spread. Call it while Run runs;
// once gossip is shut down it is an error.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.down {
		return errClosed
	}
	if err := c.list.Leave(timeout); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// Close shuts gossip down, for a Cluster whose Run never ran (Join failed,
// say). After Run it does nothing, and so does a second Close. While Run runs
// it shuts gossip down under it: end Run's context instead.
func (c *Cluster) Close() error { return c.shutdown() }

// shutdown shuts gossip down once.
func (c *Cluster) shutdown() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.down {
		return nil
	}
	c.down = true
	if err := c.list.Shutdown(); err != nil {
		return fmt.Errorf("shut gossip down: %w", err)
	}
	return nil
}

// ---- memberlist delegates: they run under memberlist's locks, so they only
// copy and enqueue (calling back into memberlist would deadlock, #237). ----

type metaDelegate struct{ c *Cluster }

func (d metaDelegate) NodeMeta(limit int) []byte {
	b, err := d.c.meta().encode()
	if err != nil || len(b) > limit {
		d.c.log.Error("node metadata does not fit", "err", err)
		return []byte{metaVersion, 0, 0}
	}
	return b
}
func (metaDelegate) NotifyMsg([]byte)                           {}
func (metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (metaDelegate) LocalState(join bool) []byte                { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

type eventDelegate struct{ c *Cluster }

func (d eventDelegate) NotifyJoin(n *memberlist.Node)   { d.c.enqueue(memberlist.NodeJoin, n) }
func (d eventDelegate) NotifyLeave(n *memberlist.Node)  { d.c.enqueue(memberlist.NodeLeave, n) }
func (d eventDelegate) NotifyUpdate(n *memberlist.Node) { d.c.enqueue(memberlist.NodeUpdate, n) }

func (c *Cluster) enqueue(kind memberlist.NodeEventType, n *memberlist.Node) {
	m := Member{
		Name:       n.Name,
		GossipAddr: n.Address(),
		State:      "alive",
		Local:      n.Name == c.cfg.NodeName,
	}
	if n.State == memberlist.StateSuspect {
		m.State = "suspect"
	}
	if meta, err := decodeMeta(n.Meta); err != nil {
		m.MetaError = err.Error()
	} else {
		m.RelayAddr, m.RingHash, m.InternalAddr = meta.RelayAddr, meta.RingHash, meta.InternalAddr
	}
	c.evMu.Lock()
	c.events = append(c.events, event{kind, m})
	c.evMu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

type conflictDelegate struct{ c *Cluster }

// NotifyConflict: another node announces our name from another address.
func (d conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name != d.c.cfg.NodeName {
		d.c.log.Error("two members claim one name", "member", existing.Name, "addr", existing.Address(), "other_addr", other.Address())
		return
	}
	d.c.evMu.Lock()
	d.c.conflict = fmt.Sprintf("member %q already runs at %s", other.Name, other.Address())
	d.c.evMu.Unlock()
}

func splitHostPort(s string, defPort int) (string, int, error) {
	if s == "" {
		return "", defPort, nil
	}
	if !strings.Contains(s, ":") || strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return strings.Trim(s, "[]"), defPort, nil
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, errors.New("want host:port")
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, errors.New("bad port")
	}
	return h, port, nil
}

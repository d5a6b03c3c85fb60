package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/ring"
	"github.com/notify-dev/notify/transport"
)

// forwardedByHeader marks a handshake relayed by another node: it is served
// where it lands, never relayed again.
const forwardedByHeader = "X-Notify-Forwarded-By"

const (
	relayDialTimeout      = 500 * time.Millisecond
	relayHandshakeTimeout = 3 * time.Second
)

// clusterView is what the node knows of the cluster at one moment. A new one
// is swapped in on every membership change; handshakes read it lock-free.
type clusterView struct {
	ring    *ring.Ring
	members []cluster.Member
	relay   map[string]string // member on the ring -> its relay address
}

func (n *Node) view() *clusterView { return n.cview.Load() }

// onMembership runs on the cluster's goroutine for every change: build the
// ring of the members that share our ring settings, swap it in, then close
// local connections of users now owned elsewhere.
func (n *Node) onMembership(members []cluster.Member) {
	self := n.cfg.NodeName
	var names []string
	relay := make(map[string]string, len(members))
	for _, m := range members {
		if m.MetaError != "" || m.RingHash != n.ringCfg.Hash() {
			continue // logged by the cluster package
		}
		names = append(names, m.Name)
		relay[m.Name] = m.RelayAddr
	}
	if !n.draining.Load() && !slices.Contains(names, self) {
		names = append(names, self) // our own join event may still be on its way
	}
	r, err := ring.New(n.ringCfg, names)
	if err != nil {
		n.log.Error("cannot build the ring; keeping the previous one", "err", err)
		return
	}
	n.cview.Store(&clusterView{ring: r, members: members, relay: relay})
	n.metrics.members.Set(float64(len(members)))
	n.metrics.partitions.Set(float64(r.Owned(self)))
	n.log.Debug("ring updated", "members", r.Members(), "owned", r.Owned(self))
	if !n.draining.Load() {
		select {
		case n.rebalanceWake <- struct{}{}:
		default:
		}
	}
}

// ownerOf returns the member that owns user and its relay address, or ""
// when this node owns it (or no other member can be reached).
func (n *Node) ownerOf(user string) (string, string) {
	v := n.view()
	owner := v.ring.Locate(user)
	if owner == "" || owner == n.cfg.NodeName {
		return "", ""
	}
	return owner, v.relay[owner]
}

// rebalanceSettle is how long after a membership change the rebalance scans
// once more: other nodes apply the change a little later and, meanwhile,
// may relay clients here for users this node no longer owns.
const rebalanceSettle = time.Second

// rebalance closes, paced and jittered, the local connections whose user is
// owned by another member: they reconnect and land on their owner. A newer
// membership change restarts the scan; each connection is checked against
// the ring current when its turn comes, so users that move back stay. Each
// change is followed by a second scan once the views have settled, and a
// handshake relayed here for a user another node owns asks for one too.
func (n *Node) rebalance(ctx context.Context) {
	interval := time.Duration(float64(time.Second) / n.cfg.RebalanceRate)
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.rebalanceWake:
			settle.Reset(rebalanceSettle)
		case <-n.rebalanceRecheck:
			settle.Reset(rebalanceSettle)
			continue
		case <-settle.C:
		}
	scan:
		self := n.cfg.NodeName
		var moving []*client
		r := n.view().ring
		for _, c := range n.allClients() {
			if owner := r.Locate(c.user); owner != "" && owner != self {
				moving = append(moving, c)
			}
		}
		if len(moving) == 0 {
			continue
		}
		n.log.Info("rebalancing: closing connections of users owned elsewhere", "connections", len(moving), "rate", n.cfg.RebalanceRate)
		rand.Shuffle(len(moving), func(i, j int) { moving[i], moving[j] = moving[j], moving[i] })
		for _, c := range moving {
			// Jitter of +-50% keeps a fleet of nodes from closing in lockstep.
			wait := interval/2 + rand.N(interval+1)
			select {
			case <-ctx.Done():
				return
			case <-n.rebalanceWake:
				settle.Reset(rebalanceSettle)
				goto scan
			case <-time.After(wait):
			}
			if n.draining.Load() {
				break
			}
			if owner := n.view().ring.Locate(c.user); owner == "" || owner == self || c.closed() {
				continue
			}
			n.closeClient(c, transport.CloseServiceRestart, "moved")
			n.metrics.rebalanceCloses.Inc()
		}
	}
}

// forward relays a handshake to the user's owner. It returns false, having
// written nothing, when the owner cannot take it: the caller serves locally
// (availability first). true means the response is handled.
func (n *Node) forward(w http.ResponseWriter, r *http.Request, owner, addr string) bool {
	fail := func(why string, err error) bool {
		n.metrics.forwardErrors.Inc()
		n.log.Warn("cannot relay to the owner; serving locally", "owner", owner, "addr", addr, "why", why, "err", err)
		return false
	}
	if addr == "" {
		return fail("no relay address", nil)
	}
	d := net.Dialer{Timeout: relayDialTimeout}
	up, err := d.DialContext(r.Context(), "tcp", addr)
	if err != nil {
		return fail("dial", err)
	}
	_ = up.SetDeadline(time.Now().Add(relayHandshakeTimeout))
	if _, err := up.Write(forwardedRequest(r, n.cfg.NodeName)); err != nil {
		up.Close()
		return fail("send handshake", err)
	}
	br := bufio.NewReaderSize(up, 4096)
	resp, err := http.ReadResponse(br, r)
	if err != nil {
		up.Close()
		return fail("read response", err)
	}
	// A WebSocket switches protocols; an event stream answers 200 and
	// streams (its body runs until the connection ends).
	if resp.StatusCode != http.StatusSwitchingProtocols && !(resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")) {
		up.Close()
		return fail(fmt.Sprintf("owner answered %d", resp.StatusCode), nil)
	}
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		n.metrics.forwardErrors.Inc()
		return true
	}
	_ = up.SetDeadline(time.Time{})
	_ = nc.SetDeadline(time.Time{})
	// The owner's 101 (with its Sec-WebSocket-Accept and X-Notify-Node) and
	// whatever it sent after it go to the client first; what the client
	// sent ahead goes to the owner.
	var toClient bytes.Buffer
	fmt.Fprintf(&toClient, "HTTP/1.1 %s\r\n", resp.Status)
	_ = resp.Header.Write(&toClient)
	toClient.WriteString("\r\n")
	toClient.Write(peekAll(br))
	n.relayed.Add(1)
	n.metrics.forwarded.Inc()
	done := func() {
		n.metrics.forwarded.Dec()
		if n.relayed.Add(-1) == 0 {
			n.signalDrained()
		}
	}
	if err := n.ws.Relay(nc, peekAll(rw.Reader), up, toClient.Bytes(), done); err != nil {
		done()
		n.metrics.forwardErrors.Inc()
		n.log.Warn("relay failed", "owner", owner, "err", err)
	}
	return true
}

// forwardedRequest is the client's handshake as the owner must see it.
func forwardedRequest(r *http.Request, self string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", r.URL.RequestURI(), r.Host)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if http.CanonicalHeaderKey(k) == forwardedByHeader {
			continue
		}
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(&b, "%s: %s\r\n", forwardedByHeader, self)
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior == "" {
			fmt.Fprintf(&b, "X-Forwarded-For: %s\r\n", host)
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func peekAll(br *bufio.Reader) []byte {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return append([]byte(nil), b...)
	}
	return nil
}

// closeRelayedVia closes, spread over the drain timeout, the connections a
// draining node relays to us: their close frames travel through its relay,
// so its clients learn to reconnect elsewhere.
func (n *Node) closeRelayedVia(node string) {
	var via []*client
	for _, c := range n.allClients() {
		if c.via == node {
			via = append(via, c)
		}
	}
	if len(via) == 0 {
		return
	}
	n.log.Info("closing connections relayed by a draining node", "node", node, "connections", len(via))
	go n.closePaced(context.Background(), via, n.cfg.DrainTimeout*9/10)
}

// ---- GET /cluster ----

type clusterMember struct {
	cluster.Member
	Partitions int  `json:"partitions"`
	OnRing     bool `json:"on_ring"`
}

type clusterStatus struct {
	Node struct {
		Name        string `json:"name"`
		Connections int64  `json:"connections"`
		Relayed     int64  `json:"relayed_connections"`
		Joined      bool   `json:"joined"`
		Draining    bool   `json:"draining"`
	} `json:"node"`
	Ring struct {
		Hash       string   `json:"hash"`
		Partitions int      `json:"partitions"`
		Members    []string `json:"members"`
	} `json:"ring"`
	Members []clusterMember `json:"members"`
	User    *struct {
		ID        string `json:"id"`
		Owner     string `json:"owner"`
		Partition int    `json:"partition"`
	} `json:"user,omitempty"`
}

func (n *Node) serveCluster(w http.ResponseWriter, r *http.Request) {
	v := n.view()
	var st clusterStatus
	st.Node.Name = n.cfg.NodeName
	st.Node.Connections = n.conns.Load()
	st.Node.Relayed = n.relayed.Load()
	st.Node.Joined = n.cluster == nil || n.cluster.Joined() == nil
	st.Node.Draining = n.draining.Load()
	st.Ring.Hash = v.ring.Config().Hash()
	st.Ring.Partitions = v.ring.Config().Partitions
	st.Ring.Members = v.ring.Members()
	for _, m := range v.members {
		_, on := v.relay[m.Name]
		st.Members = append(st.Members, clusterMember{Member: m, Partitions: v.ring.Owned(m.Name), OnRing: on})
	}
	if u := r.URL.Query().Get("user"); u != "" {
		st.User = &struct {
			ID        string `json:"id"`
			Owner     string `json:"owner"`
			Partition int    `json:"partition"`
		}{u, v.ring.Locate(u), v.ring.Partition(u)}
	}
	writeJSON(w, http.StatusOK, st)
}

// ---- cluster-wide presence ----

type presenceRequest struct {
	UserIDs []string `json:"user_ids"`
}

type presenceResponse struct {
	Connections map[string]uint32 `json:"connections"`
}

// servePresence is POST /cluster/presence: this node's connection counts,
// for a peer summing them. It needs the API key like the API.
func (n *Node) servePresence(w http.ResponseWriter, r *http.Request) {
	if err := n.api.Authorize(r.Header.Get("Authorization")); err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	var req presenceRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || len(req.UserIDs) > 1000 {
		writeError(w, http.StatusBadRequest, "want {\"user_ids\": [...]} with at most 1000 ids")
		return
	}
	writeJSON(w, http.StatusOK, presenceResponse{Connections: n.localPresence(req.UserIDs)})
}

func (n *Node) localPresence(users []string) map[string]uint32 {
	out := make(map[string]uint32, len(users))
	for _, u := range users {
		out[u] = uint32(n.hub.userCount(u))
	}
	return out
}

package mesh

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/ring"
)

const testSecret = "mesh-test-cluster-secret"

// ringView is a RingView a test swaps rings in.
type ringView struct{ p atomic.Pointer[ring.Ring] }

func (v *ringView) Ring() *ring.Ring { return v.p.Load() }

func (v *ringView) set(t testing.TB, names ...string) {
	t.Helper()
	r, err := ring.New(ring.DefaultConfig(), names)
	if err != nil {
		t.Fatal(err)
	}
	v.p.Store(r)
}

// members is the membership every test node sees; Peers leaves out self.
type members struct {
	mu   sync.Mutex
	list []cluster.Member
}

type directory struct {
	all  *members
	self string
}

func (d directory) Peers() []cluster.Member {
	d.all.mu.Lock()
	defer d.all.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(d.all.list), func(m cluster.Member) bool { return m.Name == d.self })
}

func (ms *members) remove(name string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.list = slices.DeleteFunc(ms.list, func(m cluster.Member) bool { return m.Name == name })
}

// recorder is a broker.Handler that keeps what it got.
type recorder struct {
	mu      sync.Mutex
	got     []delivery
	control []string
}

type delivery struct {
	target  broker.Target
	payload string
}

func (r *recorder) Deliver(t broker.Target, m broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, delivery{t, m.Payload})
}

func (r *recorder) Control(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.control = append(r.control, p)
}

// payloads returns what arrived for target, in order.
func (r *recorder) payloads(t broker.Target) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, d := range r.got {
		if d.target == t {
			out = append(out, d.payload)
		}
	}
	return out
}

func (r *recorder) controls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.control)
}

// testMesh is one node of a test network: its Mesh, served on a loopback
// HTTP server, running until the test ends or stop.
type testMesh struct {
	*Mesh
	name string
	ring *ringView
	rec  *recorder
	reg  *prometheus.Registry
	srv  *http.Server
	stop func()
}

// options tune a test network's meshes.
type options struct {
	secret     string // per node; empty: testSecret
	retry      time.Duration
	grace      time.Duration
	queueBytes int
}

// startNet starts one mesh per name, all members of one cluster with the
// same ring.
func startNet(t testing.TB, names []string, opt func(name string, o *options)) []*testMesh {
	t.Helper()
	all := &members{}
	lns := map[string]net.Listener{}
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[name] = ln
		all.list = append(all.list, cluster.Member{Name: name, RelayAddr: ln.Addr().String(), InternalAddr: ln.Addr().String()})
	}
	var out []*testMesh
	for _, name := range names {
		o := options{secret: testSecret, retry: time.Second, grace: time.Second}
		if opt != nil {
			opt(name, &o)
		}
		out = append(out, startMesh(t, name, lns[name], directory{all, name}, names, o))
	}
	return out
}

func startMesh(t testing.TB, name string, ln net.Listener, dir Directory, names []string, o options) *testMesh {
	t.Helper()
	tm := &testMesh{name: name, ring: &ringView{}, rec: &recorder{}, reg: prometheus.NewRegistry()}
	tm.ring.set(t, names...)
	m, err := New(Config{
		NodeName: name, Ring: tm.ring, Directory: dir, Auth: cluster.NewPeerAuth([]byte(o.secret)),
		MaxPayload: 64 << 10, QueueBytes: o.queueBytes, RetryFor: o.retry, ReadyGrace: o.grace,
		CallTimeout: 2 * time.Second, Registerer: tm.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	tm.Mesh = m
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+LinkPath, m.ServeLink)
	tm.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = tm.srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx, tm.rec) }()
	var once sync.Once
	tm.stop = func() {
		once.Do(func() {
			_ = tm.srv.Close()
			<-served
			cancel()
			if err := <-ran; err != nil {
				t.Errorf("%s: Run: %v", name, err)
			}
		})
	}
	t.Cleanup(tm.stop)
	await.True(t, name+" running", func() bool { return m.local.Ready() == nil })
	return tm
}

// userOwnedBy finds a user the ring of m places on owner.
func userOwnedBy(t testing.TB, m *testMesh, owner string, skip int) string {
	t.Helper()
	for i := range 100000 {
		u := fmt.Sprint("u-", i)
		if m.ring.Ring().Locate(u) == owner {
			if skip == 0 {
				return u
			}
			skip--
		}
	}
	t.Fatalf("no user owned by %s", owner)
	return ""
}

func (tm *testMesh) publish(t *testing.T, channel, payload string) {
	t.Helper()
	if err := tm.Publish(t.Context(), channel, []byte(payload)); err != nil {
		t.Fatalf("%s: publish %s: %v", tm.name, channel, err)
	}
}

// counter sums the series of a metric whose labels match labels (pairs).
func (tm *testMesh) counter(name string, labels ...string) float64 {
	mfs, _ := tm.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			} else if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
		return sum
	}
	return 0
}

// linksUp waits until every mesh has a link up to every other.
func linksUp(t testing.TB, ms []*testMesh) {
	t.Helper()
	for _, m := range ms {
		await.True(t, m.name+" links up", func() bool { return m.counter("notify_mesh_links_up") == float64(len(ms)-1) })
	}
}

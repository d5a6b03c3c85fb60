package node

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/api/notifypb"
	"github.com/notify-dev/notify/internal/redistest"
	"github.com/notify-dev/notify/node/internal/peers"
	"github.com/notify-dev/notify/node/internal/placement"
)

// requestAt sends method path to addr and returns the status.
func requestAt(t *testing.T, method, addr, path string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(`{"user_ids":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, addr, path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// route is a path and where it must answer.
type route struct {
	method, path string
	internal     bool // on INTERNAL_PORT; else on PORT
	status       int  // where it is served (404 on the other listener)
}

// routesByListener: the client-facing paths stay on PORT, the cluster's
// own move to INTERNAL_PORT (pprof with them, but for cmdline).
var routesByListener = []route{
	{"GET", "/healthz", false, http.StatusOK},
	{"GET", "/readyz", false, http.StatusOK},
	{"GET", "/api/healthz", false, http.StatusOK},
	{"GET", "/", false, http.StatusOK},
	{"POST", notifypb.NotifyServicePathPrefix + "Auth", false, http.StatusUnauthorized}, // no token
	{"GET", "/metrics", true, http.StatusOK},
	{"GET", "/cluster", true, http.StatusOK},
	{"POST", peers.PresencePath, true, http.StatusUnauthorized}, // unsigned
	{"GET", "/debug/pprof/", true, http.StatusOK},
	{"GET", "/debug/pprof/symbol", true, http.StatusOK},
}

func TestInternalPortRoutes(t *testing.T) {
	tn := startAPINode(t, nil, func(c *Config) {
		c.InternalPort = "127.0.0.1:0"
		c.PprofPort = "" // on INTERNAL_PORT
	})
	tn.waitReady(http.StatusOK)
	if tn.InternalAddr() == tn.Addr() {
		t.Fatalf("internal listener %s is PORT's", tn.InternalAddr())
	}
	for _, r := range routesByListener {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			on, off := tn.Addr(), tn.InternalAddr()
			if r.internal {
				on, off = off, on
			}
			if got := requestAt(t, r.method, on, r.path); got != r.status {
				t.Errorf("on its listener %s: %d, want %d", on, got, r.status)
			}
			if got := requestAt(t, r.method, off, r.path); got != http.StatusNotFound {
				t.Errorf("on the other listener %s: %d, want 404", off, got)
			}
		})
	}
	// cmdline stays off a listener other hosts reach (flags may hold secrets).
	if got := requestAt(t, "GET", tn.InternalAddr(), "/debug/pprof/cmdline"); got != http.StatusNotFound {
		t.Errorf("/debug/pprof/cmdline on INTERNAL_PORT: %d, want 404", got)
	}
}

// TestWithoutInternalPort: everything on PORT, as before INTERNAL_PORT;
// pprof is not on the HTTP listener.
func TestWithoutInternalPort(t *testing.T) {
	tn := startAPINode(t, nil, nil)
	tn.waitReady(http.StatusOK)
	if tn.InternalAddr() != tn.Addr() {
		t.Fatalf("InternalAddr %s, want PORT's %s", tn.InternalAddr(), tn.Addr())
	}
	for _, r := range routesByListener {
		want := r.status
		if strings.HasPrefix(r.path, "/debug/pprof/") {
			want = http.StatusNotFound
		}
		if got := requestAt(t, r.method, tn.Addr(), r.path); got != want {
			t.Errorf("%s %s on PORT: %d, want %d", r.method, r.path, got, want)
		}
	}
}

// TestInternalPortClientsAndAPI: with INTERNAL_PORT set, clients and the
// API on PORT work as before.
func TestInternalPortClientsAndAPI(t *testing.T) {
	tn := startAPINode(t, nil, func(c *Config) { c.InternalPort = "127.0.0.1:0" })
	c := tn.dial(token(t, "u1", nil, time.Hour), "")
	c.handshake("u1")
	ctx := withKey(t, testAPIKey)
	if _, err := tn.protoClient().Publish(ctx, &notifypb.PublishRequest{UserIds: []string{"u1"}, Payload: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	if s := c.readString(); s != "hi" {
		t.Fatalf("got %q, want hi", s)
	}
	pr, err := tn.protoClient().Presence(ctx, &notifypb.PresenceRequest{UserIds: []string{"u1"}})
	if err != nil || pr.Connections["u1"] != 1 {
		t.Fatalf("presence %v %v", pr, err)
	}
}

// TestPresenceThroughInternalPort: Presence asks each peer on the internal
// address it advertises, whether or not each node has INTERNAL_PORT.
func TestPresenceThroughInternalPort(t *testing.T) {
	tests := []struct {
		name     string
		internal [2]bool // INTERNAL_PORT set on node-0, node-1
	}{
		{"both", [2]bool{true, true}},
		{"only the asking node", [2]bool{true, false}},
		{"only the asked node", [2]bool{false, true}},
	}
	rs := redistest.Start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startCluster(t, rs, 2, func(i int, c *Config) {
				if tt.internal[i] {
					c.InternalPort = "127.0.0.1:0"
				}
			})
			if got := nodes[0].peerAddrOf("node-1"); got != nodes[1].InternalAddr() {
				t.Fatalf("node-0 calls node-1 at %q, want its internal address %s", got, nodes[1].InternalAddr())
			}
			user := userOwnedBy(t, nodes, "node-1", 0)
			c := nodes[1].dial(token(t, user, nil, time.Hour), "")
			c.handshake(user)
			for _, asker := range nodes {
				pr, err := asker.protoClient().Presence(withKey(t, testAPIKey), &notifypb.PresenceRequest{UserIds: []string{user}})
				if err != nil || pr.Connections[user] != 1 {
					t.Fatalf("presence asked of %s: %v %v, want 1 connection", asker.cfg.NodeName, pr, err)
				}
			}
		})
	}
}

// peerAddrOf reads, from /cluster on the internal listener, where this node
// calls member name.
func (tn *testNode) peerAddrOf(name string) string {
	tn.t.Helper()
	resp, err := http.Get("http://" + tn.InternalAddr() + "/cluster")
	if err != nil {
		tn.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st placement.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		tn.t.Fatalf("/cluster: %v", err)
	}
	for _, m := range st.Members {
		if m.Name == name {
			return m.PeerAddr()
		}
	}
	tn.t.Fatalf("/cluster of %s lists no %s: %+v", tn.cfg.NodeName, name, st.Members)
	return ""
}

// TestPprofPlacement: pprof lives in one place: PPROF_PORT when it is set
// ("off": nowhere), else INTERNAL_PORT when that is set, else loopback.
func TestPprofPlacement(t *testing.T) {
	tests := []struct {
		pprof, internal string
		wantAddr        string // pprof's own listener
		wantInternal    bool   // on the internal listener
	}{
		{"", "", defaultPprofAddr, false},
		{"", ":9090", "off", true},
		{"off", ":9090", "off", false},
		{"off", "", "off", false},
		{"127.0.0.1:6061", ":9090", "127.0.0.1:6061", false},
		{":6060", "", ":6060", false},
	}
	for _, tt := range tests {
		t.Run("PPROF_PORT="+tt.pprof+",INTERNAL_PORT="+tt.internal, func(t *testing.T) {
			c := DefaultConfig()
			c.PprofPort, c.InternalPort = tt.pprof, tt.internal
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := c.pprofAddr(); got != tt.wantAddr {
				t.Errorf("pprofAddr = %q, want %q", got, tt.wantAddr)
			}
			if got := c.pprofInternal(); got != tt.wantInternal {
				t.Errorf("pprofInternal = %v, want %v", got, tt.wantInternal)
			}
		})
	}
}

// TestPprofPortWinsOverInternalPort: PPROF_PORT set serves pprof there,
// cmdline included, and not on INTERNAL_PORT.
func TestPprofPortWinsOverInternalPort(t *testing.T) {
	tn := startNode(t, nil, func(c *Config) {
		c.InternalPort = "127.0.0.1:0"
		c.PprofPort = "127.0.0.1:0"
	})
	own := tn.listeners.pprof.Addr().String()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
		if got := requestAt(t, "GET", own, path); got != http.StatusOK {
			t.Errorf("%s on PPROF_PORT: %d, want 200", path, got)
		}
		if got := requestAt(t, "GET", tn.InternalAddr(), path); got != http.StatusNotFound {
			t.Errorf("%s on INTERNAL_PORT: %d, want 404", path, got)
		}
	}
}

func TestInternalPortValidated(t *testing.T) {
	c := DefaultConfig()
	c.InternalPort = "metrics"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "INTERNAL_PORT") {
		t.Fatalf("Validate = %v, want an error naming INTERNAL_PORT", err)
	}
}

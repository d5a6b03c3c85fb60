package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/notify-dev/notify/internal/await"
)

// TestWrongGossipKeyNotAdmitted: a node whose NOTIFY_GOSSIP_KEY differs from
// the cluster's joins nobody: no member lists it, and it is not ready.
func TestWrongGossipKeyNotAdmitted(t *testing.T) {
	// Small: runs beside the other small tests, after TestCluster.
	t.Parallel()
	requireTools(t, "redis-server")
	e := newEnv(t)
	a, b := e.planNode("k1", "127.0.0.6"), e.planNode("k2", "127.0.0.7")
	e.start(a, nil, true)
	e.start(b, []string{a.gossip}, true)
	members := []*node{a, b}
	waitRing(t, members, names(members))

	intruder := e.planNode("intruder", "127.0.0.8")
	intruder.key = newGossipKey(t)
	e.start(intruder, []string{a.gossip, b.gossip}, false)
	// It tries at start, then again after 1 s and 2 s of backoff: until
	// it has logged both retries failing, nobody may list it; nor after.
	noAdmission := func() {
		t.Helper()
		for _, n := range members {
			st, err := n.cluster("")
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(st.memberNames(), intruder.name) || slices.Contains(st.Ring.Members, intruder.name) {
				t.Fatalf("%s admitted a node with another gossip key: members %v, ring %v", n.name, st.memberNames(), st.Ring.Members)
			}
		}
		st, err := intruder.cluster("")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(st.memberNames(), a.name) || slices.Contains(st.memberNames(), b.name) {
			t.Fatalf("the intruder sees members %v", st.memberNames())
		}
	}
	await.True(t, "the intruder to log two failed join retries", func() bool {
		noAdmission()
		return intruder.p.logged("cluster join failed, retrying") >= 2
	})
	noAdmission()
	code, body, err := intruder.get("/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "not joined") {
		t.Errorf("intruder /readyz: %d %s %v; want 503, not joined", code, body, err)
	}
	for _, n := range members {
		if code, body, err := n.get("/readyz"); err != nil || code != http.StatusOK {
			t.Errorf("%s /readyz: %d %s %v", n.name, code, body, err)
		}
		if v, err := n.metric("notify_cluster_members"); err != nil || v != 2 {
			t.Errorf("%s: notify_cluster_members = %v (%v), want 2", n.name, v, err)
		}
	}
	t.Logf("intruder /readyz: %d %s", code, strings.TrimSpace(body))
}

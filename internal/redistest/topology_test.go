package redistest

import (
	"context"
	"fmt"
	"testing"
)

func TestStartSentinelFailover(t *testing.T) {
	st := StartSentinel(t)
	ctx := context.Background()
	first := st.MasterAddr()
	if first != st.Servers[0].Addr {
		t.Fatalf("master = %s, want the first server %s", first, st.Servers[0].Addr)
	}
	if err := st.Server(first).Client(t).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET on the master: %v", err)
	}

	next := st.Failover()
	if next != st.Servers[1].Addr {
		t.Fatalf("new master = %s, want the replica %s", next, st.Servers[1].Addr)
	}
	// The promoted replica has the data and takes writes.
	c := st.Server(next).Client(t)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET on the new master = %q, %v", v, err)
	}
	if err := c.Set(ctx, "k", "w", 0).Err(); err != nil {
		t.Fatalf("SET on the new master: %v", err)
	}
	st.WaitReplicas()
	if r := role(first); r != "slave" {
		t.Fatalf("old master's role = %q, want slave", r)
	}
}

func TestStartCluster(t *testing.T) {
	c := StartCluster(t, 3)
	cc := c.Client(t)
	ctx := context.Background()
	// Keys spread over the slots land on every master.
	seen := map[string]bool{}
	for i := range 30 {
		key := fmt.Sprintf("k%d", i)
		if err := cc.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		m := c.MasterFor(key)
		if n, err := m.Client(t).Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Fatalf("%s not on %s, its slot's master: %d, %v", key, m.Addr, n, err)
		}
		seen[m.Addr] = true
	}
	if len(seen) != 3 {
		t.Fatalf("keys on %d masters, want 3", len(seen))
	}

	// A stopped master comes back with its slots (nodes.conf), empty.
	m := c.Masters[1]
	m.Stop()
	m.Restart()
	c.WaitOK()
	if err := cc.Set(ctx, "again", "1", 0).Err(); err != nil {
		t.Fatalf("SET after the restart: %v", err)
	}
}

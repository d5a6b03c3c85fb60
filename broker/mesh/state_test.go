package mesh

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/ring"
)

// TestStateOnTheOwner: state calls made on any node land on the user's
// owner, and read the same everywhere.
func TestStateOnTheOwner(t *testing.T) {
	ms := startNet(t, []string{"a", "b", "c"}, nil)
	user := userOwnedBy(t, ms[0], "b", 0)
	ctx := t.Context()
	steps := []struct {
		name string
		do   func(m *testMesh) error
		want map[string]string
	}{
		{"set on a", func(*testMesh) error { return ms[0].SetState(ctx, user, map[string]string{"x": "1", "y": "2"}) }, map[string]string{"x": "1", "y": "2"}},
		{"set on c", func(*testMesh) error { return ms[2].SetState(ctx, user, map[string]string{"y": "3"}) }, map[string]string{"x": "1", "y": "3"}},
		{"delete a field on b", func(*testMesh) error { return ms[1].DeleteState(ctx, user, "x") }, map[string]string{"y": "3"}},
		{"delete all on a", func(*testMesh) error { return ms[0].DeleteState(ctx, user) }, map[string]string{}},
	}
	for _, s := range steps {
		if err := s.do(nil); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for _, m := range ms {
			got, err := m.GetState(ctx, user)
			if err != nil || !maps.Equal(got, s.want) {
				t.Fatalf("%s: %s reads %v %v, want %v", s.name, m.name, got, err, s.want)
			}
		}
		if got, _ := ms[1].local.GetState(ctx, user); !maps.Equal(got, s.want) {
			t.Fatalf("%s: the owner holds %v", s.name, got)
		}
	}
	if got := ms[0].counter("notify_mesh_state_calls_total", "result", "ok"); got < 4 {
		t.Errorf("forwarded calls %v", got)
	}
}

// TestHandOverOnRingChange: a member that joins gets the state of the
// users it now owns from their former owners; a field it already has wins.
func TestHandOverOnRingChange(t *testing.T) {
	ms := startNet(t, []string{"a", "b"}, nil)
	for _, m := range ms {
		m.ring.set(t, "a") // b is a member, not on the ring yet
	}
	ctx := t.Context()
	user := ownedOn(t, []string{"a", "b"}, "b")
	if err := ms[0].local.SetState(ctx, user, map[string]string{"x": "old", "y": "old"}); err != nil {
		t.Fatal(err)
	}
	if err := ms[1].local.SetState(ctx, user, map[string]string{"y": "new"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		m.ring.set(t, "a", "b")
	}
	want := map[string]string{"x": "old", "y": "new"}
	await.True(t, "state handed to b", func() bool {
		got, _ := ms[1].local.GetState(ctx, user)
		return maps.Equal(got, want)
	})
	await.True(t, "a keeps none of it", func() bool {
		got, _ := ms[0].local.GetState(ctx, user)
		return len(got) == 0
	})
	if got := ms[0].counter("notify_mesh_state_handovers_total", "result", "sent"); got != 1 {
		t.Errorf("hand-overs %v, want 1", got)
	}
}

// TestLeaveHandsOver: a leaving node gives every user's state to the owner
// the others' ring names, before it stops.
func TestLeaveHandsOver(t *testing.T) {
	ms := startNet(t, []string{"a", "b", "c"}, nil)
	ctx := t.Context()
	users := []string{userOwnedBy(t, ms[0], "c", 0), userOwnedBy(t, ms[0], "c", 1), userOwnedBy(t, ms[0], "c", 2)}
	for i, u := range users {
		if err := ms[0].SetState(ctx, u, map[string]string{"n": string(rune('0' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	leaveCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ms[2].Leave(leaveCtx)
	ms[2].stop()
	for _, m := range ms[:2] {
		m.ring.set(t, "a", "b")
	}
	for i, u := range users {
		got, err := ms[0].GetState(ctx, u)
		if err != nil || got["n"] != string(rune('0'+i)) {
			t.Errorf("%s after c left: %v %v", u, got, err)
		}
	}
}

// ownedOn finds a user the ring of names places on owner.
func ownedOn(t *testing.T, names []string, owner string) string {
	t.Helper()
	r, err := ring.New(ring.DefaultConfig(), names)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100000 {
		if u := fmt.Sprint("u-", i); r.Locate(u) == owner {
			return u
		}
	}
	t.Fatalf("no user owned by %s", owner)
	return ""
}

package broker

import (
	"context"
	"maps"
	"slices"
	"testing"
)

// TestMemoryStateHandOver: MergeState keeps what the user has, DropState
// removes only what still holds the handed values, StateUsers lists who
// has a state.
func TestMemoryStateHandOver(t *testing.T) {
	tests := []struct {
		name      string
		have      map[string]string // before
		merge     map[string]string
		afterMrg  map[string]string
		drop      map[string]string
		afterDrop map[string]string
	}{
		{"into nothing", nil, map[string]string{"a": "1"}, map[string]string{"a": "1"}, map[string]string{"a": "1"}, nil},
		{"existing fields win", map[string]string{"a": "new"}, map[string]string{"a": "old", "b": "old"},
			map[string]string{"a": "new", "b": "old"}, map[string]string{"a": "old", "b": "old"}, map[string]string{"a": "new"}},
		{"nothing to merge", map[string]string{"a": "1"}, nil, map[string]string{"a": "1"}, nil, map[string]string{"a": "1"}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMemory(nil, HistoryConfig{})
			if err := m.SetState(ctx, "u", tt.have); err != nil {
				t.Fatal(err)
			}
			if err := m.MergeState(ctx, "u", tt.merge); err != nil {
				t.Fatal(err)
			}
			if got, _ := m.GetState(ctx, "u"); !maps.Equal(got, tt.afterMrg) && !(len(got) == 0 && len(tt.afterMrg) == 0) {
				t.Fatalf("after merge %v, want %v", got, tt.afterMrg)
			}
			m.DropState("u", tt.drop)
			got, _ := m.GetState(ctx, "u")
			if !maps.Equal(got, tt.afterDrop) && !(len(got) == 0 && len(tt.afterDrop) == 0) {
				t.Fatalf("after drop %v, want %v", got, tt.afterDrop)
			}
			wantUsers := []string{"u"}
			if len(tt.afterDrop) == 0 {
				wantUsers = nil
			}
			if users := m.StateUsers(); !slices.Equal(users, wantUsers) {
				t.Fatalf("StateUsers %v, want %v", users, wantUsers)
			}
		})
	}
}

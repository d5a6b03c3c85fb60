package mesh

import (
	"fmt"
	"testing"
)

// TestQueue: FIFO through pushes and pops in every proportion, bytes
// accounted, and the slice never twice what is live (plus the slack that
// spares small queues a copy).
func TestQueue(t *testing.T) {
	tests := []struct {
		name         string
		pushes, pops int
	}{
		{"drain", 5000, 5000},
		{"half", 5000, 2500},
		{"none", 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			next := uint64(1)
			for i := range tt.pushes {
				q.push(entry{seq: uint64(i + 1), payload: fmt.Sprint(i)})
				if i%2 == 1 && next <= uint64(tt.pops) {
					if e := q.pop(); e.seq != next {
						t.Fatalf("popped %d, want %d", e.seq, next)
					}
					next++
				}
				if len(q.items) > 2*q.len()+2048 {
					t.Fatalf("slice of %d for %d live", len(q.items), q.len())
				}
			}
			for next <= uint64(tt.pops) {
				if e := q.pop(); e.seq != next {
					t.Fatalf("popped %d, want %d", e.seq, next)
				}
				next++
			}
			if want := tt.pushes - tt.pops; q.len() != want {
				t.Fatalf("len %d, want %d", q.len(), want)
			}
			sum := 0
			for i := range q.len() {
				sum += q.at(i).size()
			}
			if q.bytes != sum {
				t.Fatalf("bytes %d, want %d", q.bytes, sum)
			}
		})
	}
}

package broker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/redistest"
)

// TestStateReadsConcurrent: reads made together (batched into pipelines,
// more than one pipeline's worth) each get their own user's state, and an
// unknown user an empty map.
func TestStateReadsConcurrent(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	ctx := context.Background()
	const users = 3*maxStateBatch + 7
	for i := 0; i < users; i += 2 { // every other user has a state
		if err := r.SetState(ctx, "u"+strconv.Itoa(i), map[string]string{"n": strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := r.GetState(ctx, "u"+strconv.Itoa(i))
			switch {
			case err != nil:
				t.Errorf("GetState(u%d): %v", i, err)
			case i%2 == 0 && (len(got) != 1 || got["n"] != strconv.Itoa(i)):
				t.Errorf("GetState(u%d) = %v", i, got)
			case i%2 == 1 && (got == nil || len(got) != 0):
				t.Errorf("GetState(u%d) = %#v, want an empty map", i, got)
			}
		}()
	}
	wg.Wait()
}

// TestStateReadsCancelAndDown: a read whose context ends returns at once;
// with Redis gone a read fails as unavailable; Close waits for the drainer
// (TestMain finds nothing left running).
func TestStateReadsCancelAndDown(t *testing.T) {
	s := redistest.Start(t)
	r := newTestRedis(t, s.Addr, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.GetState(ctx, "u"); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetState with a cancelled context = %v", err)
	}
	s.Stop()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.GetState(ctx, "u"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("GetState with Redis down = %v, want ErrUnavailable", err)
	}
}

package service

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder notes the order in which services stop.
type recorder struct {
	mu      sync.Mutex
	stopped []string
}

func (r *recorder) service(name string, err error) Service {
	return Func(func(ctx context.Context) error {
		<-ctx.Done()
		r.mu.Lock()
		r.stopped = append(r.stopped, name)
		r.mu.Unlock()
		return err
	})
}

func TestGroupStopsInReverseOrder(t *testing.T) {
	var rec recorder
	g := NewGroup()
	for _, name := range []string{"a", "b", "c"} {
		if err := g.Go(name, rec.service(name, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"c", "b", "a"}; !slices.Equal(rec.stopped, want) {
		t.Fatalf("stopped %v, want %v", rec.stopped, want)
	}
	if err := g.Go("late", rec.service("late", nil)); err == nil {
		t.Fatal("Go after Stop started a service")
	}
}

func TestGroupReportsErrorsOfStop(t *testing.T) {
	var rec recorder
	g := NewGroup()
	boom := errors.New("boom")
	_ = g.Go("a", rec.service("a", boom))
	_ = g.Go("b", rec.service("b", nil))
	err := g.Stop(context.Background())
	if !errors.Is(err, boom) {
		t.Fatalf("Stop returned %v, want boom", err)
	}
}

func TestGroupFailedEarly(t *testing.T) {
	g := NewGroup()
	boom := errors.New("cannot listen")
	_ = g.Go("ok", Func(func(ctx context.Context) error { <-ctx.Done(); return nil }))
	_ = g.Go("bad", Func(func(context.Context) error { return boom }))
	select {
	case f := <-g.Failed():
		if f.Name != "bad" || !errors.Is(f.Err, boom) {
			t.Fatalf("failure %+v", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no failure reported")
	}
	if err := g.Stop(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Stop: %v", err)
	}
}

// A service that does not stop in time: Stop tells the rest at once, still
// waits for all, and says the deadline passed.
func TestGroupStopDeadline(t *testing.T) {
	var rec recorder
	release := make(chan struct{})
	g := NewGroup()
	_ = g.Go("first", rec.service("first", nil))
	_ = g.Go("slow", Func(func(ctx context.Context) error {
		<-ctx.Done()
		<-release
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Stop(ctx) }()
	cancel()
	// "first" is told to stop although "slow" has not returned yet.
	for {
		rec.mu.Lock()
		n := len(rec.stopped)
		rec.mu.Unlock()
		if n == 1 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Stop returned %v before the slow service ended", err)
		case <-time.After(time.Millisecond):
		}
	}
	close(release)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop: %v, want context.Canceled", err)
	}
}

func TestTasks(t *testing.T) {
	ts := NewTasks()
	started := make(chan struct{})
	var ended bool
	if !ts.Go(func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		ended = true
	}) {
		t.Fatal("Go refused before Stop")
	}
	<-started
	ts.Stop()
	if !ended {
		t.Fatal("Stop returned before the task ended")
	}
	if ts.Go(func(context.Context) {}) {
		t.Fatal("Go accepted after Stop")
	}
}

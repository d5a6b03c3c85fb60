//go:build linux && !notify_noepoll

package transport

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// stillLoop is a loop whose goroutine never runs, parked as far as
// Batch.Flush can tell: its queues, flags, eventfd and deadline stay as
// Flush leaves them, for the test to read.
func stillLoop(t *testing.T) *loop {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	poll, raw, err := pollable(epfd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(efd)
		poll.Close()
	})
	l := &loop{srv: &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}, epfd: epfd, efd: efd, poll: poll, rawEp: raw}
	l.parked.Store(true)
	return l
}

// nudges reads (and so resets) the loop's eventfd count.
func nudges(t *testing.T, l *loop) uint64 {
	t.Helper()
	var b [8]byte
	n, err := unix.Read(l.efd, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return 0
	}
	if err != nil || n != 8 {
		t.Fatalf("eventfd read: %d, %v", n, err)
	}
	return binary.NativeEndian.Uint64(b[:])
}

// signaled reports whether signal set the loop's deadline in the past:
// a wait would return at once.
func signaled(t *testing.T, l *loop) bool {
	t.Helper()
	err := l.rawEp.Read(func(uintptr) bool { return true })
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// queue adds n dummy connections of l to b: Flush only hands them over.
func queue(b *Batch, l *loop, n int) {
	for range n {
		b.add(&Conn{drv: l})
	}
}

func TestBatchFlushChains(t *testing.T) {
	type want struct {
		nudged, deadline bool // the eventfd was written; signal was called
		then             int  // index of the loop nudged after this one; -1: none
	}
	tests := []struct {
		name   string
		busy   []bool // per loop: not parked
		queued []int  // connections queued per loop
		want   []want
	}{
		{"small batch: a chain from the first loop",
			[]bool{false, false, false}, []int{5, 7, 3},
			[]want{{true, false, 1}, {false, false, 2}, {false, false, -1}}},
		{"a busy first loop is not the head",
			[]bool{true, false, false}, []int{5, 7, 3},
			[]want{{false, false, 2}, {true, false, 0}, {false, false, -1}}},
		{"a loop with nothing queued is left out",
			[]bool{false, false, false}, []int{0, 7, 3},
			[]want{{false, false, -1}, {true, false, 2}, {false, false, -1}}},
		{"every loop busy: each signaled",
			[]bool{true, true, true}, []int{5, 7, 3},
			[]want{{false, true, -1}, {false, true, -1}, {false, true, -1}}},
		{"more than chainMax: each signaled",
			[]bool{false, false, false}, []int{chainMax / 2, chainMax / 2, 1},
			[]want{{false, true, -1}, {false, true, -1}, {false, true, -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loops := make([]*loop, len(tt.busy))
			for i, busy := range tt.busy {
				loops[i] = stillLoop(t)
				loops[i].parked.Store(!busy)
			}
			var b Batch
			for i, n := range tt.queued {
				queue(&b, loops[i], n)
			}
			b.Flush()
			if got := b.pending(); got != 0 {
				t.Fatalf("pending() = %d after Flush", got)
			}
			for i, l := range loops {
				w := tt.want[i]
				if got := len(l.pending); got != tt.queued[i] {
					t.Errorf("loop %d: %d pending, want %d", i, got, tt.queued[i])
				}
				if got := nudges(t, l) > 0; got != w.nudged {
					t.Errorf("loop %d: nudged %v, want %v", i, got, w.nudged)
				}
				if got := signaled(t, l); got != w.deadline {
					t.Errorf("loop %d: signaled %v, want %v", i, got, w.deadline)
				}
				if got := l.signaled; got != (tt.queued[i] > 0) {
					t.Errorf("loop %d: signaled flag %v with %d queued", i, got, tt.queued[i])
				}
				var then []*loop
				if w.then >= 0 {
					then = []*loop{loops[w.then]}
				}
				if len(l.then) != len(then) || len(then) == 1 && l.then[0] != then[0] {
					t.Errorf("loop %d: then %v, want loop %d", i, l.then, w.then)
				}
			}
		})
	}
}

// Each loop of a chain, once it has taken its work, nudges the next one.
func TestChainedLoopNudgesTheNext(t *testing.T) {
	a, b2, c := stillLoop(t), stillLoop(t), stillLoop(t)
	var b Batch
	queue(&b, a, 2)
	queue(&b, b2, 2)
	queue(&b, c, 2)
	b.Flush()
	if nudges(t, a) != 1 || nudges(t, b2) != 0 || nudges(t, c) != 0 {
		t.Fatal("Flush did not nudge the head alone")
	}
	var work batch
	for _, step := range []struct {
		l, next *loop
	}{{a, b2}, {b2, c}, {c, nil}} {
		if stopping := step.l.takeWork(&work); stopping || len(work.pending) != 2 {
			t.Fatalf("took %d connections (stopping %v), want 2", len(work.pending), stopping)
		}
		if step.l.signaled || step.l.nudged {
			t.Fatal("take left the loop signaled")
		}
		if step.next != nil && nudges(t, step.next) != 1 {
			t.Fatal("the next loop of the chain was not nudged")
		}
	}
	if nudges(t, a)+nudges(t, b2)+nudges(t, c) != 0 {
		t.Fatal("a loop was nudged twice")
	}
}

// A head nudged before and not woken since is signaled by the next Flush:
// its producer did not park, so no thread polled for the nudge.
func TestChainHeadNotWokenIsSignaled(t *testing.T) {
	a, c := stillLoop(t), stillLoop(t)
	var b Batch
	queue(&b, a, 1)
	queue(&b, c, 1)
	b.Flush()
	if nudges(t, a) != 1 || signaled(t, a) {
		t.Fatal("the first Flush did not nudge the head")
	}
	queue(&b, a, 1)
	b.Flush()
	if !signaled(t, a) || a.nudged {
		t.Fatal("the second Flush did not signal the head it had nudged")
	}
	if signaled(t, c) {
		t.Fatal("the loop chained after the head was signaled: its turn comes from the head")
	}
	// A signal (a producer's Send, a big batch) reaches a loop waiting for
	// its chain's nudge as well.
	c.wake(&Conn{drv: c})
	if !signaled(t, c) {
		t.Fatal("wake did not signal a chained loop")
	}
}

// A loop shut down ignores nudges: its eventfd's number may be another
// descriptor's by then.
func TestNudgeAfterShutdown(t *testing.T) {
	l := stillLoop(t)
	efd := l.efd
	l.mu.Lock()
	l.efd = -1
	l.mu.Unlock()
	l.nudge()
	l.efd = efd // for the cleanup
	if nudges(t, l) != 0 {
		t.Fatal("nudged after shutdown")
	}
}

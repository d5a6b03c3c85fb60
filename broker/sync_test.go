package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/redistest"
)

// syncBroker is what both implementations offer for a resume.
type syncBroker interface {
	historyBroker
	Newest(ctx context.Context, t Target) (Cursor, error)
	Sync(ctx context.Context) error
}

func TestHistoryNewest(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, hb historyBroker) {
		b := hb.(syncBroker)
		ctx := context.Background()
		newest := func(target Target) Cursor {
			t.Helper()
			c, err := b.Newest(ctx, target)
			if err != nil {
				t.Fatalf("Newest(%v): %v", target, err)
			}
			return c
		}
		if c := newest(user("n")); !c.IsZero() {
			t.Fatalf("Newest of an absent stream = %v", c)
		}
		var last Cursor
		for range 3 {
			last = mustAppend(t, b, "x", "", user("n"))[0]
		}
		if c := newest(user("n")); c != last {
			t.Fatalf("Newest = %v, want %v", c, last)
		}
		if c := newest(topic("n")); !c.IsZero() {
			t.Fatalf("Newest of topic n = %v: the user's stream leaked", c)
		}
		if _, err := b.Newest(ctx, user("")); err == nil {
			t.Fatal("Newest of a target without a name succeeded")
		}
	})
	forEachHistory(t, HistoryConfig{}, func(t *testing.T, hb historyBroker) {
		if _, err := hb.(syncBroker).Newest(context.Background(), user("n")); !errors.Is(err, ErrHistoryOff) {
			t.Fatalf("Newest with history off = %v", err)
		}
	})
}

// Once Sync returns, everything published before it has reached the
// handler: counted without waiting.
func TestSync(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, hb historyBroker) {
		b := hb.(syncBroker)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := b.Sync(ctx); err == nil {
			t.Fatal("Sync without Run succeeded")
		}
		rec := runHistory(t, b)
		var channels []string
		for i := range 1000 {
			channels = append(channels, UserChannel(fmt.Sprint("s", i)))
		}
		for round := range 3 {
			if err := b.PublishMany(ctx, channels, []byte("x")); err != nil {
				t.Fatal(err)
			}
			mustAppend(t, b, "y", "", user("s"))
			if err := b.Sync(ctx); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if n := len(rec.ch); n != len(channels)+1 {
				t.Fatalf("round %d: %d messages had reached the handler when Sync returned, want %d", round, n, len(channels)+1)
			}
			for range len(channels) + 1 {
				<-rec.ch
			}
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					if err := b.Sync(ctx); err != nil {
						t.Errorf("concurrent Sync: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		canceled, stop := context.WithCancel(ctx)
		stop()
		if err := b.Sync(canceled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Sync with a canceled context = %v", err)
		}
	})
}

func TestRedisSyncUnavailable(t *testing.T) {
	s := redistest.Start(t)
	r := newHistoryRedis(t, s.Addr, nil, testHistory)
	runHistory(t, r)
	s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	start := time.Now()
	if err := r.Sync(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Sync with redis down = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > waitTimeout/2 {
		t.Fatalf("Sync took %s to fail", d)
	}
	if _, err := r.Newest(ctx, user("u")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Newest with redis down = %v, want ErrUnavailable", err)
	}
}

// A lost subscription fails the Syncs waiting for their marker at once.
func TestRedisSyncFailsWhenLost(t *testing.T) {
	r := newHistoryRedis(t, "127.0.0.1:1", nil, testHistory)
	done := make(chan error, 1)
	r.syncs.waiting = map[uint64]chan error{1: done}
	r.lost(&readerState{confirmed: map[string]bool{}}, errors.New("connection reset"))
	select {
	case err := <-done:
		if !errors.Is(err, errSyncLost) {
			t.Fatalf("waiting Sync got %v", err)
		}
	default:
		t.Fatal("a lost subscription left a Sync waiting")
	}
}

// A stream whose epoch key was deleted by hand is no history: Read and
// Newest find nothing, and the next append starts afresh (seq 1, a new
// epoch), so no old cursor can match.
func TestRedisStreamWithoutEpoch(t *testing.T) {
	s := redistest.Start(t)
	r := newHistoryRedis(t, s.Addr, nil, testHistory)
	old := mustAppend(t, r, "a", "", user("d"))[0]
	mustAppend(t, r, "b", "", user("d"))
	cli(t, s.Addr, "DEL", "{notify:d}:epoch")
	if hr := mustRead(t, r, user("d"), old); hr.Entries != nil || !hr.Newest.IsZero() || hr.Recovered {
		t.Fatalf("Read of a stream without its epoch = %+v", hr)
	}
	if c, err := r.Newest(context.Background(), user("d")); err != nil || c != (Cursor{}) {
		t.Fatalf("Newest of a stream without its epoch = %v, %v", c, err)
	}
	c := mustAppend(t, r, "c", "", user("d"))[0]
	if c.Seq != 1 || c.Epoch == old.Epoch {
		t.Fatalf("append after the epoch was deleted: %v (before: %v)", c, old)
	}
	if hr := mustRead(t, r, user("d"), Cursor{}); len(hr.Entries) != 1 || hr.Entries[0].Payload != "c" {
		t.Fatalf("Read = %+v, want only the new entry", hr)
	}
}

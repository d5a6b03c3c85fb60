package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

// Claims across 8 goroutines: exactly one wins each entry.
func TestHandoffClaimOnce(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		var cs []Cursor
		for i := range 5 {
			cs = append(cs, mustAppend(t, b, fmt.Sprint(i), "", user("h"))[0])
		}
		wins := make([]atomic.Int32, len(cs))
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i, c := range cs {
					ok, err := b.Claim(context.Background(), "h", c, time.Minute)
					if err != nil {
						t.Errorf("Claim: %v", err)
						return
					}
					if ok {
						wins[i].Add(1)
					}
				}
			})
		}
		wg.Wait()
		for i := range wins {
			if n := wins[i].Load(); n != 1 {
				t.Errorf("entry %v claimed %d times, want once", cs[i], n)
			}
		}
		// Claims are per user.
		if !claim(t, b, "other", cs[0], time.Minute) {
			t.Error("another user's entry of the same cursor was refused")
		}
	})
}

func claim(t testing.TB, h Handoffs, u string, c Cursor, ttl time.Duration) bool {
	t.Helper()
	ok, err := h.Claim(context.Background(), u, c, ttl)
	if err != nil {
		t.Fatalf("Claim(%s, %v): %v", u, c, err)
	}
	return ok
}

func received(t testing.TB, h Handoffs, u string, c Cursor) {
	t.Helper()
	if err := h.Received(context.Background(), u, c); err != nil {
		t.Fatalf("Received(%s, %v): %v", u, c, err)
	}
}

// What a connection received is not handed off; Received only moves
// forward, and counts for its own epoch only.
func TestHandoffReceived(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		e := mustAppend(t, b, "x", "", user("r"))[0].Epoch
		at := func(seq uint64) Cursor { return Cursor{e, seq} }
		received(t, b, "r", at(3))
		received(t, b, "r", at(1)) // late, older: ignored
		steps := []struct {
			c    Cursor
			want bool
		}{
			{at(1), false},
			{at(2), false}, // still covered: Received did not move back
			{at(3), false},
			{at(4), true},
			{at(4), false}, // claimed already
			{Cursor{"other", 2}, true},
		}
		for _, s := range steps {
			if got := claim(t, b, "r", s.c, time.Minute); got != s.want {
				t.Errorf("Claim(%v) = %v, want %v", s.c, got, s.want)
			}
		}
		received(t, b, "r", Cursor{"other", 9})
		received(t, b, "r", Cursor{"third", 1}) // a third epoch drops "other" (not the stream's)
		for _, s := range []struct {
			c    Cursor
			want bool
		}{{at(3), false}, {Cursor{"other", 5}, true}, {Cursor{"third", 1}, false}, {at(5), true}} {
			if got := claim(t, b, "r", s.c, time.Minute); got != s.want {
				t.Errorf("after more epochs: Claim(%v) = %v, want %v", s.c, got, s.want)
			}
		}
		// Another user's record does not count.
		if !claim(t, b, "s", at(1), time.Minute) {
			t.Error("user s's entry was covered by user r's Received")
		}
	})
}

// A claim is kept for its TTL, then the entry may be claimed again.
func TestHandoffClaimTTL(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		c := Cursor{"e", 1}
		if !claim(t, b, "x", c, 200*time.Millisecond) {
			t.Fatal("first claim refused")
		}
		if claim(t, b, "x", c, 200*time.Millisecond) {
			t.Fatal("second claim within the TTL won")
		}
		await.True(t, "the claim to expire", func() bool { return claim(t, b, "x", c, time.Minute) })
	})
}

func TestHandoffBadArguments(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		ctx := context.Background()
		c := Cursor{"e", 1}
		for name, err := range map[string]error{
			"Received without a user":   b.Received(ctx, "", c),
			"Received without a cursor": b.Received(ctx, "u", Cursor{}),
			"Claim without a user":      second(b.Claim(ctx, "", c, time.Minute)),
			"Claim without a cursor":    second(b.Claim(ctx, "u", Cursor{}, time.Minute)),
			"Claim with no TTL":         second(b.Claim(ctx, "u", c, 0)),
		} {
			if err == nil {
				t.Errorf("%s succeeded", name)
			}
		}
	})
}

func second[T any](_ T, err error) error { return err }

// The memory broker sweeps what expired: on writes (amortised), and from
// Run when nothing is written.
func TestMemoryHistorySweep(t *testing.T) {
	const ttl = 100 * time.Millisecond
	m := NewMemory(nil, HistoryConfig{Size: 5, TTL: ttl})
	size := func() (streams, others int) {
		m.histMu.Lock()
		defer m.histMu.Unlock()
		return len(m.hist.streams), len(m.hist.received) + len(m.hist.claims)
	}
	const n = 500
	for i := range n {
		c := mustAppend(t, m, "x", "", user(fmt.Sprint("old", i)))[0]
		received(t, m, fmt.Sprint("old", i), c)
		claim(t, m, fmt.Sprint("old", i), Cursor{c.Epoch, 2}, ttl)
	}
	start := time.Now()
	await.True(t, "the TTL to pass", func() bool { return time.Since(start) > ttl })
	// Receipts outlive the history (ReceivedTTL): only streams and claims go.
	m.histMu.Lock()
	for _, r := range m.hist.received {
		r.expires = time.Now()
	}
	m.histMu.Unlock()
	// No Run: writes alone sweep the expired streams. The last sweep of the
	// first loop kept at most its 3n writes, so 3n more sweep again.
	for i := range 3 * n {
		mustAppend(t, m, "x", "", user(fmt.Sprint("new", i)))
	}
	m.histMu.Lock()
	for ch := range m.hist.streams {
		if ch[len(UserPrefix):len(UserPrefix)+3] == "old" {
			t.Errorf("expired stream %s still kept after %d writes", ch, 3*n)
			break
		}
	}
	m.histMu.Unlock()
	if _, others := size(); others != 0 {
		t.Errorf("%d expired receipts and claims kept", others)
	}
	// Run sweeps the rest once it expired, with nothing written.
	runWith(t, m, nopHandler{})
	await.True(t, "Run's sweep to empty the history", func() bool { s, o := size(); return s == 0 && o == 0 })
}

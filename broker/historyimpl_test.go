package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
	"github.com/notify-dev/notify/internal/redistest"
)

// History and hand-offs: every test here runs against each implementation.

// historyBroker is what both implementations offer.
type historyBroker interface {
	Broker
	History
	Handoffs
}

func forEachHistory(t *testing.T, cfg HistoryConfig, f func(t *testing.T, b historyBroker)) {
	impls := []struct {
		name string
		new  func(t *testing.T) historyBroker
	}{
		{"memory", func(t *testing.T) historyBroker { return NewMemory(nil, cfg) }},
		{"redis", func(t *testing.T) historyBroker { return newHistoryRedis(t, redistest.Start(t).Addr, nil, cfg) }},
	}
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) { f(t, im.new(t)) })
	}
}

// testHistory is a history kept long enough for any test run.
var testHistory = HistoryConfig{Size: 1000, TTL: time.Hour}

// delivery is what a Handler was given.
type delivery struct {
	t Target
	m Message
}

// historyRecorder records every delivery with its cursor and event.
type historyRecorder struct {
	t  testing.TB
	ch chan delivery
}

func (r *historyRecorder) Deliver(t Target, m Message) {
	select {
	case r.ch <- delivery{t.Clone(), m.Clone()}:
	default:
		r.t.Errorf("recorder full, dropped a message to %v", t)
	}
}

func (r *historyRecorder) Control(string) {}

// runHistory runs b with a historyRecorder until the test ends, and waits
// for readiness.
func runHistory(t testing.TB, b Broker) *historyRecorder {
	t.Helper()
	rec := &historyRecorder{t: t, ch: make(chan delivery, 10000)}
	runReadyWith(t, b, rec)
	return rec
}

// next returns the next delivery, failing t after waitTimeout.
func (r *historyRecorder) next(t testing.TB) delivery {
	t.Helper()
	select {
	case d := <-r.ch:
		return d
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a delivery")
		return delivery{}
	}
}

// expect reads exactly want, in order.
func (r *historyRecorder) expect(t testing.TB, want ...delivery) {
	t.Helper()
	for i, w := range want {
		if got := r.next(t); got != w {
			t.Fatalf("delivery %d = %+v, want %+v", i, got, w)
		}
	}
}

func (r *historyRecorder) expectNothing(t testing.TB) {
	t.Helper()
	select {
	case d := <-r.ch:
		t.Fatalf("unexpected delivery %+v", d)
	default:
	}
}

func mustAppend(t testing.TB, h History, payload, event string, targets ...Target) []Cursor {
	t.Helper()
	cs, err := h.Append(context.Background(), targets, []byte(payload), event)
	if err != nil {
		t.Fatalf("Append(%v, %q): %v", targets, payload, err)
	}
	if len(cs) != len(targets) {
		t.Fatalf("Append to %d targets returned %d cursors", len(targets), len(cs))
	}
	return cs
}

func mustRead(t testing.TB, h History, target Target, since Cursor) HistoryRead {
	t.Helper()
	hr, err := h.Read(context.Background(), target, since)
	if err != nil {
		t.Fatalf("Read(%v, %q): %v", target, since, err)
	}
	return hr
}

func user(name string) Target  { return Target{Name: name} }
func topic(name string) Target { return Target{Topic: true, Name: name} }

func TestHistoryAppendDelivers(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		rec := runHistory(t, b)
		u, news := user("u1"), topic("news")
		first := mustAppend(t, b, "hello", "", u, news)
		for _, c := range first {
			if c.Seq != 1 || c.Epoch == "" {
				t.Fatalf("first cursors %v, want seq 1 of a new epoch each", first)
			}
		}
		second := mustAppend(t, b, "\xff\x00bytes", "score", u)
		if second[0] != (Cursor{first[0].Epoch, 2}) {
			t.Fatalf("second cursor %v after %v", second[0], first[0])
		}
		rec.expect(t,
			delivery{u, Message{Payload: "hello", Cursor: first[0]}},
			delivery{news, Message{Payload: "hello", Cursor: first[1]}},
			delivery{u, Message{Payload: "\xff\x00bytes", Cursor: second[0], Event: "score"}})

		// A plain publish stays verbatim, without a cursor and out of history.
		if err := b.Publish(context.Background(), UserChannel("u1"), []byte("plain")); err != nil {
			t.Fatal(err)
		}
		rec.expect(t, delivery{u, Message{Payload: "plain"}})
		rec.expectNothing(t)

		hr := mustRead(t, b, u, Cursor{})
		want := []Entry{{first[0], "hello", ""}, {second[0], "\xff\x00bytes", "score"}}
		if !slices.Equal(hr.Entries, want) || hr.Newest != second[0] || hr.Recovered {
			t.Fatalf("Read(u1) = %+v, want entries %+v, newest %v, not recovered", hr, want, second[0])
		}
		hr = mustRead(t, b, news, Cursor{})
		if !slices.Equal(hr.Entries, []Entry{{first[1], "hello", ""}}) || hr.Newest != first[1] {
			t.Fatalf("Read(news) = %+v", hr)
		}
		// A topic and a user of the same name are different streams.
		if hr := mustRead(t, b, topic("u1"), Cursor{}); len(hr.Entries) != 0 || !hr.Newest.IsZero() {
			t.Fatalf("Read(topic u1) = %+v, want nothing", hr)
		}
	})
}

// trimCase is a Read of TestHistoryTrim's stream: size 3, five appends,
// so entries 3, 4, 5 are kept.
type trimCase struct {
	name      string
	since     Cursor
	want      []uint64 // seqs of the entries
	recovered bool
}

func trimCases(cs []Cursor) []trimCase {
	return []trimCase{
		{"zero: all kept", Cursor{}, []uint64{3, 4, 5}, false},
		{"1: entry 2 was trimmed", cs[0], []uint64{3, 4, 5}, false},
		{"2: nothing after it trimmed", cs[1], []uint64{3, 4, 5}, true},
		{"3", cs[2], []uint64{4, 5}, true},
		{"4", cs[3], []uint64{5}, true},
		{"5: the newest", cs[4], nil, true},
		{"other epoch", Cursor{"other", 4}, []uint64{3, 4, 5}, false},
		{"past the newest", Cursor{cs[0].Epoch, 6}, []uint64{3, 4, 5}, false},
	}
}

// appendTrimmed makes TestHistoryTrim's stream, user t: five appends to a
// history of size 3.
func appendTrimmed(t testing.TB, h History) []Cursor {
	var cs []Cursor
	for i := 1; i <= 5; i++ {
		cs = append(cs, mustAppend(t, h, fmt.Sprint("m", i), "", user("t"))[0])
	}
	return cs
}

// checkTrimCase checks what a Read of a trimCase returned.
func checkTrimCase(t testing.TB, tt trimCase, hr HistoryRead, cs []Cursor) {
	t.Helper()
	var seqs []uint64
	for _, e := range hr.Entries {
		if e.Cursor.Epoch != cs[0].Epoch || e.Payload != fmt.Sprint("m", e.Cursor.Seq) {
			t.Errorf("%s: entry %+v", tt.name, e)
		}
		seqs = append(seqs, e.Cursor.Seq)
	}
	if !slices.Equal(seqs, tt.want) || hr.Recovered != tt.recovered || hr.Newest != cs[4] {
		t.Errorf("%s: Read = seqs %v recovered %v newest %v; want %v %v %v",
			tt.name, seqs, hr.Recovered, hr.Newest, tt.want, tt.recovered, cs[4])
	}
}

func TestHistoryTrim(t *testing.T) {
	forEachHistory(t, HistoryConfig{Size: 3, TTL: time.Hour}, func(t *testing.T, b historyBroker) {
		cs := appendTrimmed(t, b)
		for _, tt := range trimCases(cs) {
			checkTrimCase(t, tt, mustRead(t, b, user("t"), tt.since), cs)
		}
	})
}

func TestHistoryReadAbsent(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		for _, since := range []Cursor{{}, {"1733050000123456", 3}} {
			for _, target := range []Target{user("nobody"), topic("nothing")} {
				hr := mustRead(t, b, target, since)
				if hr.Entries != nil || !hr.Newest.IsZero() || hr.Recovered {
					t.Errorf("Read(%v, %v) of an absent stream = %+v, want nothing", target, since, hr)
				}
			}
		}
	})
}

// The stream and its epoch expire TTL after the last append; the next
// append starts a new epoch at seq 1, and the old cursor is not recovered.
func TestHistoryTTL(t *testing.T) {
	const ttl = 700 * time.Millisecond
	forEachHistory(t, HistoryConfig{Size: 10, TTL: ttl}, func(t *testing.T, b historyBroker) {
		old := mustAppend(t, b, "old", "", user("ttl"), user("quiet"))
		await.True(t, "the stream to expire", func() bool { return mustRead(t, b, user("ttl"), Cursor{}).Newest.IsZero() })
		// Also for a stream nobody looked at since (so not removed by a read).
		cs := mustAppend(t, b, "new", "", user("ttl"), user("quiet"))
		for i, c := range cs {
			if c.Seq != 1 || c.Epoch == old[i].Epoch {
				t.Fatalf("cursor after expiry %v; want seq 1 of an epoch other than %v's", c, old[i])
			}
		}
		c := cs[0]
		hr := mustRead(t, b, user("ttl"), old[0])
		if hr.Recovered || !slices.Equal(hr.Entries, []Entry{{c, "new", ""}}) || hr.Newest != c {
			t.Fatalf("Read(old cursor) = %+v; want not recovered, the new entry only", hr)
		}
		if hr := mustRead(t, b, user("ttl"), c); !hr.Recovered || len(hr.Entries) != 0 {
			t.Fatalf("Read(new cursor) = %+v; want recovered, nothing after it", hr)
		}
	})
}

// Concurrent appends to one stream: cursors strictly increasing per caller
// and gap-free over all, delivered in cursor order.
func TestHistoryConcurrentAppend(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		rec := runHistory(t, b)
		const writers, each = 8, 50
		got := make([][]Cursor, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					cs, err := b.Append(context.Background(), []Target{user("hot")}, fmt.Append(nil, w, "/", i), "")
					if err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					got[w] = append(got[w], cs[0])
				}
			})
		}
		wg.Wait()
		var all []uint64
		for w, cs := range got {
			for i, c := range cs {
				if c.Epoch != got[0][0].Epoch || (i > 0 && c.Seq <= cs[i-1].Seq) {
					t.Fatalf("writer %d: cursor %v after %v", w, c, cs[max(i-1, 0)])
				}
				all = append(all, c.Seq)
			}
		}
		slices.Sort(all)
		for i, seq := range all {
			if seq != uint64(i+1) {
				t.Fatalf("seqs %v..., want 1..%d without a gap", all[:i+1], writers*each)
			}
		}
		for i := range writers * each {
			if d := rec.next(t); d.m.Cursor.Seq != uint64(i+1) || d.t != user("hot") {
				t.Fatalf("delivery %d: %+v, want seq %d", i, d, i+1)
			}
		}
		rec.expectNothing(t)
	})
}

// Appended without a Run: kept, delivered to nobody, as Redis pub/sub
// without subscribers.
func TestHistoryAppendWithoutRun(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		early := mustAppend(t, b, "early", "", user("w"))[0]
		rec := runHistory(t, b)
		late := mustAppend(t, b, "late", "", user("w"))[0]
		rec.expect(t, delivery{user("w"), Message{Payload: "late", Cursor: late}})
		rec.expectNothing(t)
		hr := mustRead(t, b, user("w"), Cursor{})
		if !slices.Equal(hr.Entries, []Entry{{early, "early", ""}, {late, "late", ""}}) {
			t.Fatalf("Read = %+v", hr)
		}
	})
}

// A target without a name fails the whole Append before anything is
// appended.
func TestHistoryBadTarget(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		ctx := context.Background()
		for _, targets := range [][]Target{{user("")}, {user("ok"), topic("")}} {
			if _, err := b.Append(ctx, targets, []byte("x"), ""); err == nil || errors.Is(err, ErrUnavailable) {
				t.Errorf("Append(%v) = %v; want an error, not ErrUnavailable", targets, err)
			}
		}
		if hr := mustRead(t, b, user("ok"), Cursor{}); len(hr.Entries) != 0 {
			t.Fatalf("a refused Append appended %+v", hr.Entries)
		}
		if _, err := b.Read(ctx, topic(""), Cursor{}); err == nil {
			t.Error("Read of a topic without a name succeeded")
		}
		if cs, err := b.Append(ctx, nil, []byte("x"), ""); err != nil || len(cs) != 0 {
			t.Errorf("Append to no target = %v, %v; want nothing", cs, err)
		}
	})
}

func TestHistoryOff(t *testing.T) {
	forEachHistory(t, HistoryConfig{}, func(t *testing.T, b historyBroker) {
		rec := runHistory(t, b)
		ctx := context.Background()
		c := Cursor{"e", 1}
		_, errAppend := b.Append(ctx, []Target{user("u")}, []byte("x"), "")
		_, errRead := b.Read(ctx, user("u"), Cursor{})
		_, errClaim := b.Claim(ctx, "u", c, time.Minute)
		for name, err := range map[string]error{
			"Append": errAppend, "Read": errRead, "Received": b.Received(ctx, "u", c), "Claim": errClaim,
		} {
			if !errors.Is(err, ErrHistoryOff) {
				t.Errorf("%s with history off = %v, want ErrHistoryOff", name, err)
			}
		}
		// Publishing is as before.
		if err := b.Publish(ctx, UserChannel("u"), []byte("plain")); err != nil {
			t.Fatal(err)
		}
		rec.expect(t, delivery{user("u"), Message{Payload: "plain"}})
		rec.expectNothing(t)
	})
}

func TestHistoryCanceledContext(t *testing.T) {
	forEachHistory(t, testHistory, func(t *testing.T, b historyBroker) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c := Cursor{"e", 1}
		_, errAppend := b.Append(ctx, []Target{user("u"), topic("t")}, []byte("x"), "")
		_, errOne := b.Append(ctx, []Target{user("u")}, []byte("x"), "")
		_, errRead := b.Read(ctx, user("u"), Cursor{})
		_, errClaim := b.Claim(ctx, "u", c, time.Minute)
		for name, err := range map[string]error{
			"Append": errAppend, "Append one": errOne, "Read": errRead, "Received": b.Received(ctx, "u", c), "Claim": errClaim,
		} {
			if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
				t.Errorf("%s = %v; want context.Canceled and not ErrUnavailable", name, err)
			}
		}
	})
}

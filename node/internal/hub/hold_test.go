package hub

import (
	"slices"
	"testing"

	"github.com/notify-dev/notify/broker"
)

func TestHold(t *testing.T) {
	h := NewHold(10)
	cur := func(e string, s uint64) broker.Cursor { return broker.Cursor{Epoch: e, Seq: s} }
	offered := []Message{
		{Name: "u", Payload: "a", Cursor: cur("e", 4)},              // replayed: dropped
		{Name: "u", Payload: "b", Cursor: cur("e", 5)},              // the newest read: dropped
		{Name: "u", Payload: "c", Cursor: cur("e", 6)},              // after it: kept
		{Name: "u", Payload: "d"},                                   // no history: kept
		{Topic: true, Name: "t", Payload: "e", Cursor: cur("e", 1)}, // topic not read (zero): kept
		{Name: "u", Payload: "f", Cursor: cur("other", 1)},          // another epoch: kept
	}
	for i := range offered {
		if !h.Offer(&offered[i]) {
			t.Fatal("held before Release refused a message")
		}
	}
	newest := func(topic bool, name string) broker.Cursor {
		if topic {
			return broker.Cursor{}
		}
		return cur("e", 5)
	}
	var got []string
	var over bool
	h.Release(newest, func(live []Message, overflow bool) {
		for _, m := range live {
			got = append(got, m.Payload)
		}
		over = overflow
	})
	if want := []string{"c", "d", "e", "f"}; !slices.Equal(got, want) || over {
		t.Fatalf("released %q overflow=%v, want %q", got, over, want)
	}
	if h.Offer(&Message{Payload: "late"}) {
		t.Fatal("a message offered after Release was held")
	}
	small := NewHold(3)
	for _, p := range []string{"ab", "cd"} {
		small.Offer(&Message{Payload: p})
	}
	small.Release(newest, func(_ []Message, overflow bool) { over = overflow })
	if !over {
		t.Fatal("4 bytes held under a 3-byte limit: no overflow")
	}
}

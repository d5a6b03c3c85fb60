package hub

import (
	"slices"
	"testing"
	"unsafe"

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

// TestHoldCopies: a held message keeps its name and payload though the
// buffer the broker handed them in is reused right after the delivery.
func TestHoldCopies(t *testing.T) {
	h := NewHold(1 << 10)
	buf := []byte("user-1payload-1")
	m := Message{Name: unsafe.String(&buf[0], 6), Payload: unsafe.String(&buf[6], 9)}
	h.Offer(&m)
	copy(buf, "XXXXXXXXXXXXXXX") // the broker's next read
	h.Release(func(bool, string) broker.Cursor { return broker.Cursor{} }, func(live []Message, _ bool) {
		if len(live) != 1 || live[0].Name != "user-1" || live[0].Payload != "payload-1" {
			t.Fatalf("held %+v, want user-1/payload-1", live)
		}
	})
}

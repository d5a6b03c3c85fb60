package broker

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/notify-dev/notify/internal/await"
)

// flushRecorder is a recorder that is also a Flusher: it counts the
// deliveries not yet followed by a Flush, and checks that no two calls
// overlap.
type flushRecorder struct {
	*recorder
	inCall    sync.Mutex // held during a call: TryLock fails when another is in
	mu        sync.Mutex
	unflushed int
	flushes   int
}

var _ Flusher = (*flushRecorder)(nil)

// alone runs f, failing the test when another call is under way.
func (r *flushRecorder) alone(f func()) {
	if !r.inCall.TryLock() {
		r.t.Errorf("a handler call overlaps another")
		f()
		return
	}
	defer r.inCall.Unlock()
	f()
}

func (r *flushRecorder) Deliver(t Target, m Message) {
	r.alone(func() {
		r.recorder.Deliver(t, m)
		r.mu.Lock()
		r.unflushed++
		r.mu.Unlock()
	})
}

func (r *flushRecorder) Flush() {
	r.alone(func() {
		r.mu.Lock()
		r.unflushed, r.flushes = 0, r.flushes+1
		r.mu.Unlock()
	})
}

func (r *flushRecorder) state() (unflushed, flushes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unflushed, r.flushes
}

// Every broker calls Flush after the messages it delivered, before it
// waits for more: a handler that holds work back never keeps it.
func TestBrokersFlushAfterDelivering(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		rec := &flushRecorder{recorder: newRecorder(t)}
		runReadyWith(t, b, rec)
		ctx := context.Background()
		channels := []string{UserChannel("1"), UserChannel("2"), TopicChannel("t")}
		if err := b.PublishMany(ctx, channels, []byte("m")); err != nil {
			t.Fatal(err)
		}
		rec.expect(t, msg{channels[0], "m"}, msg{channels[1], "m"}, msg{channels[2], "m"})
		await.True(t, "a Flush after the deliveries", func() bool {
			unflushed, flushes := rec.state()
			return unflushed == 0 && flushes > 0
		})
	})
}

// holdingRecorder passes a delivery on to rec only at the Flush after it,
// as the hub's batch does with its wake-ups: a message the broker does not
// flush never arrives.
type holdingRecorder struct {
	rec  *recorder
	mu   sync.Mutex
	held []msg
}

var _ Flusher = (*holdingRecorder)(nil)

func (h *holdingRecorder) Deliver(t Target, m Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = append(h.held, msg{t.Channel(), strings.Clone(m.Payload)})
}

func (h *holdingRecorder) Control(payload string) { h.rec.Control(payload) }

func (h *holdingRecorder) Flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.held {
		h.rec.record(m)
	}
	h.held = h.held[:0]
}

// Messages published one by one, with pauses and in bursts, all arrive
// through Flush: none is left held while the broker waits.
func TestBrokersFlushEveryMessage(t *testing.T) {
	forEachImpl(t, func(t *testing.T, b testBroker) {
		h := &holdingRecorder{rec: newRecorder(t)}
		runReadyWith(t, b, h)
		ctx := context.Background()
		for i := range 50 {
			p := strconv.Itoa(i)
			if err := b.Publish(ctx, UserChannel("u"), []byte(p)); err != nil {
				t.Fatal(err)
			}
			h.rec.expect(t, msg{UserChannel("u"), p})
		}
		many := make([]string, 200)
		for i := range many {
			many[i] = UserChannel(strconv.Itoa(i))
		}
		if err := b.PublishMany(ctx, many, []byte("burst")); err != nil {
			t.Fatal(err)
		}
		for _, ch := range many {
			h.rec.expect(t, msg{ch, "burst"})
		}
	})
}

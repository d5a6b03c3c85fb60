package transport

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Frames queued through a Batch wait for Flush, which wakes each loop once
// for all of its connections; every client then reads them in order.
func TestBatchFlushWakesTheLoops(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const conns, rounds, perRound = 8, 50, 3
	clients := make([]*websocket.Conn, conns)
	server := make([]*Conn, conns)
	for i := range clients {
		cl, _, err := websocket.Dial(ctx, ts.url(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.CloseNow()
		clients[i], server[i] = cl, ts.nextConn(t)
	}
	var b Batch
	errs := make(chan error, conns)
	for i, cl := range clients {
		go func() {
			for j := range rounds * perRound {
				_, p, err := cl.Read(ctx)
				if want := fmt.Sprint(i, ":", j); err != nil || string(p) != want {
					errs <- fmt.Errorf("client %d, message %d: %q, %v; want %q", i, j, p, err, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for r := range rounds {
		for k := range perRound {
			for i, c := range server {
				// direct is ignored with a batch: the loop writes.
				if !c.PushBatch(DataFrame(fmt.Sprint(i, ":", r*perRound+k)), true, &b) {
					t.Fatalf("push refused")
				}
			}
		}
		// A connection waits once for many frames, unless its loop,
		// flushing it for the round before, took the first ones already.
		if got := b.Pending(); got > conns*perRound || r == 0 && got == 0 {
			t.Fatalf("Pending() = %d before Flush, want 1 to %d", got, conns*perRound)
		}
		b.Flush()
		if got := b.Pending(); got != 0 {
			t.Fatalf("Pending() = %d after Flush", got)
		}
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

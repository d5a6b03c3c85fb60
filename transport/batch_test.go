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
		if got := b.pending(); got > conns*perRound || r == 0 && got == 0 {
			t.Fatalf("pending() = %d before Flush, want 1 to %d", got, conns*perRound)
		}
		b.Flush()
		if got := b.pending(); got != 0 {
			t.Fatalf("pending() = %d after Flush", got)
		}
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A batch that holds batchWakeAt connections of one loop wakes that loop
// without waiting for Flush: a big topic's message is written while the
// rest is still being queued. The rest waits for Flush.
func TestBatchWakesABusyLoopBeforeFlush(t *testing.T) {
	cfg := testConfig()
	cfg.Loops = 1
	ts := startServer(t, cfg, serverOpts{})
	const n = batchWakeAt + 44
	raws := make([]*rawClient, n)
	conns := make([]*Conn, n)
	for i := range n {
		raws[i] = dialRaw(t, ts.addr, nil)
		conns[i] = ts.nextConn(t)
	}
	var b Batch
	for i, c := range conns {
		if !c.PushBatch(DataFrame(fmt.Sprint("m", i)), false, &b) {
			t.Fatalf("push %d refused", i)
		}
	}
	// A connection still being registered is flushed by its registration
	// instead, so at most the last n-batchWakeAt wait.
	if got := b.pending(); got > n-batchWakeAt {
		t.Fatalf("pending() = %d, want at most %d: the loop was not woken at %d", got, n-batchWakeAt, batchWakeAt)
	}
	read := func(i int) {
		t.Helper()
		if f := raws[i].read(); string(f.Payload) != fmt.Sprint("m", i) {
			t.Fatalf("connection %d got %q", i, f.Payload)
		}
	}
	for i := range batchWakeAt {
		read(i) // before any Flush
	}
	b.Flush()
	for i := batchWakeAt; i < n; i++ {
		read(i)
	}
}

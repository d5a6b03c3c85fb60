package transport

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestDataHeaderIsDataFramesHead(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000} {
		for _, p := range []string{strings.Repeat("é", n)[:n], strings.Repeat("\xff", n)} {
			h := DataHeader(p)
			if got, want := append(h[:len(h):len(h)], p...), DataFrame(p); !bytes.Equal(got, want) {
				t.Fatalf("%d bytes: header %x + payload differs from DataFrame", n, h)
			}
		}
	}
}

// TestPushParts: frames pushed as header and payload reach the client
// whole and in order with whole frames between them, written at once or
// by the loop, batched or not.
func TestPushParts(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	rc := dialRaw(t, ts.addr, nil)
	c := ts.nextConn(t)
	var b Batch
	payloads := []string{"a", "", strings.Repeat("x", 200), "\xff\xfe", strings.Repeat("y", 70000)}
	var want []string
	for i, p := range payloads {
		switch i % 3 {
		case 0:
			c.PushParts(DataHeader(p), p, true, nil) // written at once
		case 1:
			c.PushParts(DataHeader(p), p, false, &b)
		default:
			c.PushParts(DataHeader(p), p, false, nil)
		}
		c.Enqueue(DataFrame("whole"))
		want = append(want, p, "whole")
	}
	b.Flush()
	for i, w := range want {
		f := rc.read()
		if string(f.Payload) != w {
			t.Fatalf("frame %d: %d bytes %.20q, want %d bytes %.20q", i, len(f.Payload), f.Payload, len(w), w)
		}
		if op := f.Header.OpCode; (op == ws.OpText) != (w != "\xff\xfe") {
			t.Fatalf("frame %d: opcode %v", i, op)
		}
	}
}

// TestPushPartsCut: a client that stops reading is cut in the middle of
// two-part frames: what it then reads is whole frames (the one in
// progress finished, header and payload), then 4008, and every frame
// taken is either read or counted as dropped.
func TestPushPartsCut(t *testing.T) {
	cfg := testConfig()
	cfg.SendQueueBytes = 64 << 10
	cfg.CloseTimeout = 10 * time.Second
	ts := startServer(t, cfg, serverOpts{})
	rc := dialRaw(t, ts.addr, nil) // reads nothing until the cut
	c := ts.nextConn(t)
	p := strings.Repeat("z", 3000)
	taken := 0
	for i := 0; i < 100000 && c.PushParts(DataHeader(p), p, i%2 == 0, nil); i++ {
		taken++
	}
	if taken == 100000 {
		t.Fatal("never cut")
	}
	read := 0
	for {
		f := rc.read()
		if f.Header.OpCode == ws.OpClose {
			break
		}
		if string(f.Payload) != p {
			t.Fatalf("frame %d: %d bytes, want %d: the stream was cut mid-frame", read, len(f.Payload), len(p))
		}
		read++
	}
	rc.write(clientFrame(true, 0, byte(ws.OpClose), true, closePayload(CloseSlowConsumer, "")))
	ev := ts.rec.waitClose(t)
	if ev.info.Code != CloseSlowConsumer {
		t.Fatalf("close code %d", ev.info.Code)
	}
	// The refused frame counts as dropped too (Send's cut).
	if read+ev.info.Dropped != taken+1 {
		t.Fatalf("taken %d (+1 refused), read %d, dropped %d", taken, read, ev.info.Dropped)
	}
}

// TestCutKeepsFrameInProgress: wherever the writes stopped in a queue of
// two-part and whole frames, a cut keeps exactly the rest of the frame in
// progress, then the close frame, and counts the frames it dropped.
func TestCutKeepsFrameInProgress(t *testing.T) {
	p1, p2 := strings.Repeat("a", 130), "bb"
	frames := [][]byte{DataFrame(p1), DataFrame(p2), DataFrame("whole")}
	var stream []byte
	var ends []int // where each frame ends in stream
	for _, f := range frames {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	for n := 0; n < len(stream); n++ {
		c := &Conn{}
		c.queueLocked(DataHeader(p1), []byte(p1))
		c.queueLocked(DataHeader(p2), []byte(p2))
		c.queueLocked(DataFrame("whole"), nil)
		c.consumeLocked(n)
		c.applyCutLocked()
		var rest []byte
		for i, part := range c.queue {
			if i == 0 {
				part = part[c.head:]
			}
			rest = append(rest, part...)
		}
		inProgress, dropped, start := 0, 0, 0
		for _, end := range ends {
			switch {
			case n >= end: // written
			case n > start: // begun: n = len(the header) is the header alone out
				inProgress = end - n
			default:
				dropped++
			}
			start = end
		}
		want := append(append([]byte{}, stream[n:n+inProgress]...), closeFrame(CloseSlowConsumer, "slow consumer")...)
		if !bytes.Equal(rest, want) || int(c.dropped) != dropped || int(c.queued) != len(want) {
			t.Fatalf("after %d bytes: kept %q (queued %d), dropped %d; want %q, %d", n, rest, c.queued, c.dropped, want, dropped)
		}
	}
}

// TestQueueArrayReused: a connection's queue array goes back to the pool
// once written, whole even after partial writes, so queuing a message to
// an idle connection allocates nothing once the pool has arrays.
func TestQueueArrayReused(t *testing.T) {
	srv := &Server{}
	srv.queues.New = func() any { return new(queueArray) }
	c := &Conn{srv: srv}
	h, p := DataHeader("hello"), []byte("hello")
	cycle := func() {
		c.queueLocked(h, p)
		c.queueLocked(h, p)
		c.consumeLocked(len(h) + 1) // part of the first payload
		c.consumeLocked(len(p) - 1 + len(h))
		if cap(c.queue) != len(queueArray{}) {
			t.Fatalf("cap %d after partial writes, want the pool's array", cap(c.queue))
		}
		c.consumeLocked(len(p))
		if c.queue != nil || c.queued != 0 {
			t.Fatalf("queue %v, %d bytes after everything was written", c.queue, c.queued)
		}
	}
	cycle()
	if allocs := testing.AllocsPerRun(100, cycle); allocs != 0 {
		t.Fatalf("%.1f allocations per message pair", allocs)
	}
}

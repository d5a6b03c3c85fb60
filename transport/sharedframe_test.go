package transport

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/notify-dev/notify/internal/await"
)

// TestSharedFramesInOrder: frames built in pooled buffers and released by
// their maker right after the push reach the client intact and in order,
// though each buffer is reused as soon as the connection is done with it.
func TestSharedFramesInOrder(t *testing.T) {
	cfg := testConfig()
	cfg.SendQueueBytes = 16 << 20 // all of them may queue
	ts := startServer(t, cfg, serverOpts{})
	ctx, cl, c := dialClient(t, ts)

	var pool FramePool
	const n = 3000
	payload := func(i int) string {
		// Lengths across three pool classes and past the last.
		return fmt.Sprintf("msg-%d-%s", i, strings.Repeat("x", (i%4)*700))
	}
	go func() {
		var b Batch
		for i := 0; i < n; i++ {
			f := pool.DataFrame(payload(i))
			var ok bool
			switch i % 3 {
			case 0:
				ok = c.PushShared(f, true, nil) // written at once when nothing is queued
			case 1:
				ok = c.PushShared(f, false, nil)
			default:
				ok = c.PushShared(f, true, &b)
				b.Flush()
			}
			f.Release()
			if !ok {
				t.Errorf("push %d refused", i)
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		_, got, err := cl.Read(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if want := payload(i); string(got) != want {
			t.Fatalf("message %d: %.40q, want %.40q", i, got, want)
		}
	}
}

// TestSharedFramesReleased: every reference a connection takes is given
// back, whether the frame is written, dropped by a slow-consumer cut, or
// dropped with the socket, and a refused frame takes none.
func TestSharedFramesReleased(t *testing.T) {
	payload := strings.Repeat("p", 1000)
	cases := []struct {
		name string
		run  func(t *testing.T, ts *testServer, push func(c *Conn) *SharedFrame) []*SharedFrame
	}{
		{"written", pushAndRead},
		{"cut as a slow consumer", func(t *testing.T, ts *testServer, push func(c *Conn) *SharedFrame) []*SharedFrame {
			slow := dialRaw(t, ts.addr, nil) // reads nothing until the cut
			c := ts.nextConn(t)
			var fs []*SharedFrame
			for !c.Closed() {
				fs = append(fs, push(c))
			}
			slow.expectClose(CloseSlowConsumer)
			return fs
		}},
		{"dropped with the socket", func(t *testing.T, ts *testServer, push func(c *Conn) *SharedFrame) []*SharedFrame {
			slow := dialRaw(t, ts.addr, nil)
			c := ts.nextConn(t)
			var fs []*SharedFrame
			for range 100 { // within the queue, beyond the socket's buffers
				fs = append(fs, push(c))
			}
			slow.nc.Close()
			ts.rec.waitClose(t)
			return fs
		}},
		{"refused", func(t *testing.T, ts *testServer, push func(c *Conn) *SharedFrame) []*SharedFrame {
			c := ts.srv.NewConn(ConnOptions{Handler: ts.rec})
			c.Close(CloseNormal, "")
			return []*SharedFrame{push(c)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.SendQueueBytes = 256 << 10
			ts := startServer(t, cfg, serverOpts{})
			var pool FramePool
			push := func(c *Conn) *SharedFrame {
				f := pool.DataFrame(payload)
				f.refs.Add(1) // the test's own, to look at refs after the maker's Release
				c.PushShared(f, false, nil)
				f.Release()
				return f
			}
			fs := tc.run(t, ts, push)
			for i, f := range fs {
				await.True(t, fmt.Sprintf("frame %d released", i), func() bool { return f.refs.Load() == 1 })
			}
		})
	}
}

// pushAndRead pushes 100 frames to a client that reads them all.
func pushAndRead(t *testing.T, ts *testServer, push func(c *Conn) *SharedFrame) []*SharedFrame {
	ctx, cl, c := dialClient(t, ts)
	var fs []*SharedFrame
	for range 100 {
		fs = append(fs, push(c))
	}
	for i := range fs {
		if _, _, err := cl.Read(ctx); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	return fs
}

// dialClient connects a client to ts and returns it, the server's side and
// a context for its reads; all end with the test.
func dialClient(t *testing.T, ts *testServer) (context.Context, *websocket.Conn, *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	cl, _, err := websocket.Dial(ctx, ts.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.CloseNow() })
	return ctx, cl, ts.nextConn(t)
}

// TestSharedFrameOverRelease: a reference given back twice is a bug, not a
// silent reuse of a buffer someone still reads.
func TestSharedFrameOverRelease(t *testing.T) {
	var pool FramePool
	f := pool.DataFrame("x")
	f.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("a second Release did not panic")
		}
	}()
	f.Release()
}

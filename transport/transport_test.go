package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"github.com/notify-dev/notify/internal/await"
)

func testConfig() Config {
	return Config{PingInterval: time.Minute, CloseTimeout: 2 * time.Second, Loops: 2}
}

func TestDeliverInOrder(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, _, err := websocket.Dial(ctx, ts.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseNow()
	c := ts.nextConn(t)

	const n = 2000
	go func() {
		for i := 0; i < n; i++ {
			p := fmt.Sprintf("msg-%d", i)
			if i%10 == 9 {
				p = string([]byte{0xff, byte(i)}) // not UTF-8: a binary frame
			}
			if !c.Send(DataFrame(p)) {
				t.Errorf("send %d refused", i)
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		typ, b, err := cl.Read(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if i%10 == 9 {
			if typ != websocket.MessageBinary || string(b) != string([]byte{0xff, byte(i)}) {
				t.Fatalf("message %d: type %v %q, want binary", i, typ, b)
			}
			continue
		}
		if want := fmt.Sprintf("msg-%d", i); typ != websocket.MessageText || string(b) != want {
			t.Fatalf("message %d: type %v %q, want text %q", i, typ, b, want)
		}
	}
	if err := cl.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	if ev := ts.rec.waitClose(t); ev.info.Code != CloseNormal {
		t.Fatalf("OnClose code %d, want %d", ev.info.Code, CloseNormal)
	}
}

func TestLargeFrames(t *testing.T) {
	ts := startServer(t, Config{PingInterval: time.Minute, SendQueueBytes: 8 << 20, Loops: 1}, serverOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, _, err := websocket.Dial(ctx, ts.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseNow()
	cl.SetReadLimit(-1)
	c := ts.nextConn(t)
	sizes := []int{0, 125, 126, 65535, 65536, 1 << 20}
	for _, n := range sizes {
		c.Send(DataFrame(strings.Repeat("x", n)))
	}
	for _, n := range sizes {
		_, b, err := cl.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != n {
			t.Fatalf("got %d bytes, want %d", len(b), n)
		}
	}
}

func TestHeldConnectionKeepsOrder(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{
		held: func(c *Conn) {
			c.Send(DataFrame("held-1"))
			c.Send(DataFrame("held-2"))
		},
		first: func(c *Conn) [][]byte {
			return [][]byte{DataFrame("first-1"), DataFrame("first-2")}
		},
	})
	rc := dialRaw(t, ts.addr, nil)
	for _, want := range []string{"first-1", "first-2", "held-1", "held-2"} {
		if f := rc.read(); string(f.Payload) != want {
			t.Fatalf("got %q, want %q", f.Payload, want)
		}
	}
}

// TestHeldConnectionClosedOrCut: a connection closed, or cut as a slow
// consumer, before it is attached (a burst to a user while it connects)
// waits for Attach, which sends what was queued and the close.
func TestHeldConnectionClosedOrCut(t *testing.T) {
	cases := []struct {
		name string
		held func(c *Conn)
		want []string // data frames before the close
		code int
	}{
		{"closed", func(c *Conn) {
			c.Send(DataFrame("held-1"))
			c.Close(CloseGoingAway, "")
		}, []string{"held-1"}, CloseGoingAway},
		{"cut", func(c *Conn) {
			for c.Send(DataFrame(strings.Repeat("p", 500))) {
			}
		}, nil, CloseSlowConsumer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.SendQueueBytes = 4096
			ts := startServer(t, cfg, serverOpts{held: tc.held})
			rc := dialRaw(t, ts.addr, nil)
			for _, want := range tc.want {
				if f := rc.read(); string(f.Payload) != want {
					t.Fatalf("got %q, want %q", f.Payload, want)
				}
			}
			rc.expectClose(tc.code)
		})
	}
}

// TestHandlerPerConnection: each connection's events go to the Handler it
// was created with, and to no other.
func TestHandlerPerConnection(t *testing.T) {
	recs := []*recorder{newRecorder(), newRecorder()}
	var n atomic.Int32
	ts := startServer(t, testConfig(), serverOpts{conn: func(*http.Request) ConnOptions {
		return ConnOptions{Messages: true, Handler: recs[n.Add(1)-1]}
	}})
	clients := make([]*rawClient, len(recs))
	conns := make([]*Conn, len(recs))
	for i := range recs {
		clients[i] = dialRaw(t, ts.addr, nil)
		conns[i] = ts.nextConn(t)
	}
	for i, rc := range clients {
		rc.write(clientFrame(true, 0, byte(ws.OpText), true, []byte(fmt.Sprint("to ", i))))
		rc.write(clientFrame(true, 0, byte(ws.OpClose), true, closePayload(CloseNormal, "")))
		rc.expectClose(CloseNormal)
	}
	for i, rec := range recs {
		select {
		case m := <-rec.msgs:
			if want := fmt.Sprint("to ", i); m.payload != want {
				t.Errorf("handler %d got message %q, want %q", i, m.payload, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("handler %d got no message", i)
		}
		if ev := rec.waitClose(t); ev.c != conns[i] {
			t.Errorf("handler %d got the OnClose of another connection", i)
		}
		select {
		case m := <-rec.msgs:
			t.Errorf("handler %d got a second message %q", i, m.payload)
		case ev := <-rec.closes:
			t.Errorf("handler %d got a second OnClose (%d)", i, ev.info.Code)
		default:
		}
	}
	if len(ts.rec.msgs) != 0 || len(ts.rec.closes) != 0 {
		t.Error("the default handler got events of connections created with their own")
	}
}

func TestNewConnWithoutHandlerPanics(t *testing.T) {
	srv, err := NewServer(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Handler") {
			t.Fatalf("recovered %v, want a panic naming the missing Handler", r)
		}
	}()
	srv.NewConn(ConnOptions{})
}

func TestPingPongAndBufferedInput(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	// The ping travels in the same TCP write as the handshake.
	rc := dialRaw(t, ts.addr, clientFrame(true, 0, byte(ws.OpPing), true, []byte("early")))
	c := ts.nextConn(t)
	if f := rc.read(); f.Header.OpCode != ws.OpPong || string(f.Payload) != "early" {
		t.Fatalf("got %v %q, want pong early", f.Header.OpCode, f.Payload)
	}
	// A ping split into single bytes across many reads: each byte is read
	// by the server before the next is sent.
	for _, b := range clientFrame(true, 0, byte(ws.OpPing), true, []byte("split")) {
		rc.write([]byte{b})
		await.True(t, "the server to read the byte", func() bool { return unreadByServer(c) <= 0 })
	}
	if f := rc.read(); f.Header.OpCode != ws.OpPong || string(f.Payload) != "split" {
		t.Fatalf("got %v %q, want pong split", f.Header.OpCode, f.Payload)
	}
	// A ping between the fragments of a message is answered at once.
	rc.write(clientFrame(false, 0, byte(ws.OpText), true, []byte("hel")))
	rc.write(clientFrame(true, 0, byte(ws.OpPing), true, []byte("mid")))
	if f := rc.read(); f.Header.OpCode != ws.OpPong || string(f.Payload) != "mid" {
		t.Fatalf("got %v %q, want pong mid", f.Header.OpCode, f.Payload)
	}
	rc.write(clientFrame(true, 0, byte(ws.OpContinuation), true, []byte("lo")))
	rc.write(clientFrame(true, 0, byte(ws.OpClose), true, closePayload(1000, "done")))
	rc.expectClose(1000)
	rc.expectEOF()
}

func TestServerPingAndIdleTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval = 100 * time.Millisecond
	ts := startServer(t, cfg, serverOpts{})

	// A client that answers pings stays (coder/websocket answers them).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	live, _, err := websocket.Dial(ctx, ts.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.CloseNow()
	liveCtx, stopLive := context.WithCancel(ctx)
	defer stopLive()
	liveDone := make(chan error, 1)
	go func() { _, _, err := live.Read(liveCtx); liveDone <- err }()
	ts.nextConn(t)

	// A silent client receives pings, then the idle close.
	rc := dialRaw(t, ts.addr, nil)
	ts.nextConn(t)
	if f := rc.read(); f.Header.OpCode != ws.OpPing {
		t.Fatalf("got %v, want ping", f.Header.OpCode)
	}
	start := time.Now()
	if reason := rc.expectClose(CloseNormal); reason != "idle timeout" {
		t.Fatalf("reason %q", reason)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle close took %v", d)
	}
	select {
	case err := <-liveDone:
		t.Fatalf("the live client was closed too: %v", err)
	default:
	}
}

func TestTokenExpiry(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{conn: func(*http.Request) ConnOptions {
		return ConnOptions{Expiry: time.Now().Add(200 * time.Millisecond)}
	}})
	rc := dialRaw(t, ts.addr, nil)
	if reason := rc.expectClose(CloseTokenExpired); reason != "token expired" {
		t.Fatalf("reason %q", reason)
	}
	rc.write(clientFrame(true, 0, byte(ws.OpClose), true, closePayload(CloseTokenExpired, "")))
	rc.expectEOF()
	if ev := ts.rec.waitClose(t); ev.info.Code != CloseTokenExpired {
		t.Fatalf("OnClose code %d", ev.info.Code)
	}
}

func TestServerCloseHandshake(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, _, err := websocket.Dial(ctx, ts.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseNow()
	c := ts.nextConn(t)
	c.Send(DataFrame("last"))
	c.Close(CloseDisconnected, "disconnected")
	if c.Send(DataFrame("after close")) {
		t.Fatal("Send accepted a frame after Close")
	}
	if _, b, err := cl.Read(ctx); err != nil || string(b) != "last" {
		t.Fatalf("read %q %v", b, err)
	}
	_, _, err = cl.Read(ctx)
	if got := websocket.CloseStatus(err); got != CloseDisconnected {
		t.Fatalf("close status %d (%v), want %d", got, err, CloseDisconnected)
	}
	if ev := ts.rec.waitClose(t); ev.info.Code != CloseDisconnected {
		t.Fatalf("OnClose code %d", ev.info.Code)
	}
}

func TestClientCloseWithoutStatus(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	rc := dialRaw(t, ts.addr, nil)
	rc.write(clientFrame(true, 0, byte(ws.OpClose), true, nil))
	rc.expectClose(0)
	rc.expectEOF()
	if ev := ts.rec.waitClose(t); ev.info.Code != CloseNoStatus {
		t.Fatalf("OnClose code %d, want %d", ev.info.Code, CloseNoStatus)
	}
}

func TestPeerVanishes(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	rc := dialRaw(t, ts.addr, nil)
	ts.nextConn(t)
	rc.nc.Close()
	if ev := ts.rec.waitClose(t); ev.info.Code != CloseAbnormal {
		t.Fatalf("OnClose code %d, want %d", ev.info.Code, CloseAbnormal)
	}
}

// TestPeerVanishesMidWrite: the peer goes while a large frame is being
// written to it; the connection ends (the write stops part way) and reports
// the vanished peer.
func TestPeerVanishesMidWrite(t *testing.T) {
	cfg := testConfig()
	cfg.SendQueueBytes = 8 << 20
	ts := startServer(t, cfg, serverOpts{})
	big := DataFrame(strings.Repeat("w", 4<<20))
	for i := 0; i < 5; i++ {
		rc := dialRaw(t, ts.addr, nil)
		c := ts.nextConn(t)
		if !c.Send(big) {
			t.Fatal("frame refused")
		}
		// Take a little of it, so the write is under way, then vanish.
		if _, err := io.ReadFull(rc.br, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		rc.nc.Close()
		if ev := ts.rec.waitClose(t); ev.c != c || ev.info.Code != CloseAbnormal {
			t.Fatalf("round %d: OnClose code %d, want %d", i, ev.info.Code, CloseAbnormal)
		}
	}
}

func TestBadInput(t *testing.T) {
	long := strings.Repeat("a", 5000)
	tests := []struct {
		name   string
		frames [][]byte
		code   int
	}{
		{"unmasked frame", [][]byte{clientFrame(true, 0, byte(ws.OpText), false, []byte("hi"))}, CloseProtocolError},
		{"reserved bits", [][]byte{clientFrame(true, 1, byte(ws.OpText), true, []byte("hi"))}, CloseProtocolError},
		{"unknown opcode", [][]byte{clientFrame(true, 0, 0x3, true, []byte("hi"))}, CloseProtocolError},
		{"unknown control opcode", [][]byte{clientFrame(true, 0, 0xB, true, nil)}, CloseProtocolError},
		{"frame over limit", [][]byte{clientFrame(true, 0, byte(ws.OpBinary), true, []byte(long))}, CloseTooBig},
		{"message over limit in fragments", [][]byte{
			clientFrame(false, 0, byte(ws.OpBinary), true, []byte(long[:3000])),
			clientFrame(true, 0, byte(ws.OpContinuation), true, []byte(long[:3000])),
		}, CloseTooBig},
		{"invalid UTF-8", [][]byte{clientFrame(true, 0, byte(ws.OpText), true, []byte{'a', 0xff})}, CloseInvalidPayload},
		{"surrogate in UTF-8", [][]byte{clientFrame(true, 0, byte(ws.OpText), true, []byte{0xed, 0xa0, 0x80})}, CloseInvalidPayload},
		{"truncated UTF-8 at message end", [][]byte{clientFrame(true, 0, byte(ws.OpText), true, []byte{'a', 0xe2, 0x82})}, CloseInvalidPayload},
		{"invalid UTF-8 across fragments", [][]byte{
			clientFrame(false, 0, byte(ws.OpText), true, []byte{0xe2, 0x82}),
			clientFrame(true, 0, byte(ws.OpContinuation), true, []byte{0x41}),
		}, CloseInvalidPayload},
		{"continuation without start", [][]byte{clientFrame(true, 0, byte(ws.OpContinuation), true, []byte("x"))}, CloseProtocolError},
		{"new message inside fragmented one", [][]byte{
			clientFrame(false, 0, byte(ws.OpText), true, []byte("a")),
			clientFrame(true, 0, byte(ws.OpText), true, []byte("b")),
		}, CloseProtocolError},
		{"fragmented ping", [][]byte{clientFrame(false, 0, byte(ws.OpPing), true, nil)}, CloseProtocolError},
		{"oversize ping", [][]byte{clientFrame(true, 0, byte(ws.OpPing), true, []byte(long[:126]))}, CloseProtocolError},
		{"close with one byte", [][]byte{clientFrame(true, 0, byte(ws.OpClose), true, []byte{3})}, CloseProtocolError},
		{"close with reserved code", [][]byte{clientFrame(true, 0, byte(ws.OpClose), true, closePayload(1005, ""))}, CloseProtocolError},
		{"close with code out of range", [][]byte{clientFrame(true, 0, byte(ws.OpClose), true, closePayload(5000, ""))}, CloseProtocolError},
		{"close reason not UTF-8", [][]byte{clientFrame(true, 0, byte(ws.OpClose), true, closePayload(1000, "\xff"))}, CloseInvalidPayload},
	}
	ts := startServer(t, testConfig(), serverOpts{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, ts.addr, nil)
			for _, f := range tt.frames {
				rc.write(f)
			}
			rc.expectClose(tt.code)
			rc.expectEOF()
		})
	}
	// Every bad connection ended; none was left open.
	for range tests {
		ts.rec.waitClose(t)
	}
}

func TestValidInputIsAccepted(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{conn: func(*http.Request) ConnOptions {
		return ConnOptions{Messages: true}
	}})
	rc := dialRaw(t, ts.addr, nil)
	euro := []byte("€uro")
	rc.write(clientFrame(false, 0, byte(ws.OpText), true, euro[:1]))
	rc.write(clientFrame(false, 0, byte(ws.OpContinuation), true, euro[1:2]))
	rc.write(clientFrame(true, 0, byte(ws.OpContinuation), true, euro[2:]))
	rc.write(clientFrame(true, 0, byte(ws.OpBinary), true, []byte{0xff, 0}))
	rc.write(clientFrame(true, 0, byte(ws.OpText), true, nil))
	rc.write(clientFrame(true, 0, byte(ws.OpText), true, []byte(strings.Repeat("z", 4096))))
	want := []message{{true, "€uro"}, {false, "\xff\x00"}, {true, ""}, {true, strings.Repeat("z", 4096)}}
	for _, w := range want {
		select {
		case m := <-ts.rec.msgs:
			if m != w {
				t.Fatalf("got %v %q, want %v %q", m.text, m.payload, w.text, w.payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("message not delivered")
		}
	}
}

func TestSlowConsumerIsCut(t *testing.T) {
	cfg := testConfig()
	cfg.SendQueueBytes = 64 << 10
	cfg.CloseTimeout = 10 * time.Second
	ts := startServer(t, cfg, serverOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	slow := dialRaw(t, ts.addr, nil) // reads nothing until the cut
	slowConn := ts.nextConn(t)
	fast, _, err := websocket.Dial(ctx, ts.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.CloseNow()
	fastConn := ts.nextConn(t)

	// Both get the same stream; the fast client reads it as it comes. The
	// slow one fills its kernel buffers, then its queue, and is cut.
	const total = 40000
	frame := DataFrame(strings.Repeat("p", 1000))
	// Stay well within the fast client's queue: bytes in a write that has
	// not returned yet still count as queued, so allow for twice the window.
	// A token per frame sent to the fast client and not yet read by it.
	window := make(chan struct{}, 16)
	var received atomic.Int64
	readErr := make(chan error, 1)
	readerGone := make(chan struct{})
	go func() {
		defer close(readerGone)
		for received.Load() < total {
			if _, _, err := fast.Read(ctx); err != nil {
				readErr <- err
				return
			}
			received.Add(1)
			<-window
		}
		readErr <- nil
	}()
	cutAt := -1
	for i := 0; i < total; i++ {
		select {
		case window <- struct{}{}:
		case <-readerGone:
			t.Fatalf("fast client after %d frames: %v", received.Load(), <-readErr)
		}
		if !fastConn.Send(frame) {
			t.Fatalf("the fast client was refused frame %d", i)
		}
		if !slowConn.Send(frame) && cutAt < 0 {
			cutAt = i
		}
	}
	if err := <-readErr; err != nil {
		t.Fatalf("fast client after %d frames: %v", received.Load(), err)
	}
	if cutAt < 0 {
		t.Fatalf("%d MB queued for a client that reads nothing, and it was not cut", total/1000)
	}
	t.Logf("slow client cut after %d frames", cutAt)
	// The slow client reads again: it finds what was in flight, then 4008.
	slow.expectClose(CloseSlowConsumer)
	slow.write(clientFrame(true, 0, byte(ws.OpClose), true, closePayload(CloseSlowConsumer, "")))
	ev := ts.rec.waitClose(t)
	if ev.c != slowConn || ev.info.Code != CloseSlowConsumer || ev.info.Dropped == 0 {
		t.Fatalf("OnClose %+v, want slow consumer with drops", ev.info)
	}
}

func TestServerCloseEndsEverything(t *testing.T) {
	cfg := testConfig()
	ts := startServer(t, cfg, serverOpts{})
	for i := 0; i < 10; i++ {
		dialRaw(t, ts.addr, nil)
		ts.nextConn(t)
	}
	ts.srv.Close()
	for i := 0; i < 10; i++ {
		if ev := ts.rec.waitClose(t); ev.info.Code != CloseGoingAway {
			t.Fatalf("code %d", ev.info.Code)
		}
	}
}

// TestServerCloseMidWrite: Close while a frame larger than the socket
// buffers is being written to a client that stopped reading; the write stops
// part way and the connection ends with CloseGoingAway.
func TestServerCloseMidWrite(t *testing.T) {
	cfg := testConfig()
	cfg.SendQueueBytes = 64 << 20
	cfg.CloseTimeout = time.Minute // the fallback's write deadline
	ts := startServer(t, cfg, serverOpts{})
	rc := dialRaw(t, ts.addr, nil)
	c := ts.nextConn(t)
	if !c.Send(DataFrame(strings.Repeat("w", 32<<20))) {
		t.Fatal("frame refused")
	}
	// A little of it came: the write is under way, and the rest cannot fit
	// in the socket buffers while the client reads no more.
	if _, err := io.ReadFull(rc.br, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	ts.srv.Close()
	if ev := ts.rec.waitClose(t); ev.c != c || ev.info.Code != CloseGoingAway {
		t.Fatalf("OnClose code %d, want %d", ev.info.Code, CloseGoingAway)
	}
}

func TestManyConnections(t *testing.T) {
	const conns, msgs = 500, 50
	ts := startServer(t, testConfig(), serverOpts{})
	clients := make([]*rawClient, conns)
	servers := make([]*Conn, conns)
	for i := range clients {
		clients[i] = dialRaw(t, ts.addr, nil)
		servers[i] = ts.nextConn(t)
	}
	frames := make([][]byte, msgs)
	for i := range frames {
		frames[i] = DataFrame(fmt.Sprint(i))
	}
	for _, f := range frames {
		for _, c := range servers {
			c.Send(f)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for _, rc := range clients {
		wg.Add(1)
		go func(rc *rawClient) {
			defer wg.Done()
			_ = rc.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			for i := 0; i < msgs; i++ {
				f, err := readFrame(rc.br)
				if err != nil {
					errs <- err
					return
				}
				if string(f.Payload) != fmt.Sprint(i) {
					errs <- fmt.Errorf("got %q, want %d", f.Payload, i)
					return
				}
			}
		}(rc)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCloseTimeoutDefault(t *testing.T) {
	for _, tt := range []struct {
		set, want time.Duration
	}{
		{0, DefaultConfig().CloseTimeout},
		{1500 * time.Millisecond, 1500 * time.Millisecond},
	} {
		srv, err := NewServer(Config{CloseTimeout: tt.set, Loops: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got := srv.CloseTimeout(); got != tt.want {
			t.Errorf("CloseTimeout() with %v configured = %v, want %v", tt.set, got, tt.want)
		}
		srv.Close()
	}
}

func TestCheckUpgrade(t *testing.T) {
	good := func() *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "http://notify.example/", nil)
		r.Header.Set("Connection", "keep-alive, Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		r.Header.Set("Sec-WebSocket-Version", "13")
		return r
	}
	tests := []struct {
		name   string
		mutate func(r *http.Request)
		status int
	}{
		{"valid", func(*http.Request) {}, 0},
		{"plain GET", func(r *http.Request) { r.Header = http.Header{} }, http.StatusBadRequest},
		{"POST", func(r *http.Request) { r.Method = http.MethodPost }, http.StatusMethodNotAllowed},
		{"HTTP/1.0", func(r *http.Request) { r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0 }, http.StatusBadRequest},
		{"no host", func(r *http.Request) { r.Host = "" }, http.StatusBadRequest},
		{"no upgrade header", func(r *http.Request) { r.Header.Del("Upgrade") }, http.StatusBadRequest},
		{"bad key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "short") }, http.StatusBadRequest},
		{"old version", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }, http.StatusUpgradeRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.mutate(r)
			err := CheckUpgrade(r)
			if tt.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if n := testing.AllocsPerRun(20, func() { _ = CheckUpgrade(r) }); n != 0 {
					t.Fatalf("%v allocations per handshake check, want none", n)
				}
				return
			}
			ue, ok := IsUpgradeError(err)
			if !ok || ue.Status != tt.status {
				t.Fatalf("got %v, want status %d", err, tt.status)
			}
		})
	}
}

// TestUpgradeResponse: the 101 response's accept value (RFC 6455's
// example), its fields in the order of their names, and values that cannot
// add a field.
func TestUpgradeResponse(t *testing.T) {
	const key, accept = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n"
	tests := []struct {
		name   string
		header http.Header
		want   string
	}{
		{"no header", nil, head + "\r\n"},
		{"one field", http.Header{"X-Notify-Node": {"n1"}}, head + "X-Notify-Node: n1\r\n\r\n"},
		{"sorted", http.Header{"X-Notify-Node": {"n1"}, "Sec-WebSocket-Protocol": {"phoenix"}, "A": {"1", "2"}},
			head + "A: 1\r\nA: 2\r\nSec-WebSocket-Protocol: phoenix\r\nX-Notify-Node: n1\r\n\r\n"},
		{"CR and LF", http.Header{"X-Notify-Node": {"n1\r\nSet-Cookie: x\n"}}, head + "X-Notify-Node: n1  Set-Cookie: x \r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := upgradeResponse(key, tt.header)
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if len(got) != cap(got) {
				t.Errorf("len %d, cap %d: the size was not computed exactly", len(got), cap(got))
			}
		})
	}
}

// TestFrameWithFIN: a frame and the FIN in one go; the connection ends at
// once, not at the idle timeout.
func TestFrameWithFIN(t *testing.T) {
	ts := startServer(t, testConfig(), serverOpts{})
	for i := 0; i < 20; i++ {
		rc := dialRaw(t, ts.addr, nil)
		ts.nextConn(t)
		rc.write(clientFrame(true, 0, byte(ws.OpText), true, []byte("bye")))
		rc.nc.(*net.TCPConn).CloseWrite()
		ev := ts.rec.waitClose(t)
		if ev.info.Code != CloseAbnormal {
			t.Fatalf("round %d: code %d", i, ev.info.Code)
		}
	}
}

// TestRawConnection: a raw (Server-Sent Events) connection gets bytes as they
// are, keep-alives instead of pings, no idle timeout, and a last message on
// close.
func TestRawConnection(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval = 100 * time.Millisecond
	raw := &RawOptions{
		Ping: []byte(": ping\n\n"),
		Close: func(code int, reason string) []byte {
			return []byte(fmt.Sprintf("event: close\ndata: %d %s\n\n", code, reason))
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rec := newRecorder()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	attached := make(chan *Conn, 1)
	go func() {
		defer close(attached)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		c := srv.NewConn(ConnOptions{Raw: raw, Handler: rec})
		if err := srv.Attach(c, nc, []byte("ignored input"), []byte("first\n\n")); err != nil {
			t.Error(err)
			return
		}
		attached <- c
	}()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Three keep-alives, so three ping intervals of silence from the client:
	// more than the idle timeout of a WebSocket (two intervals).
	head := "first\n\n" + strings.Repeat(": ping\n\n", 3)
	got := make([]byte, len(head))
	if _, err := io.ReadFull(cl, got); err != nil || string(got) != head {
		t.Fatalf("stream starts %q (%v), want %q", got, err, head)
	}
	c, ok := <-attached
	if !ok {
		t.Fatal("not attached")
	}
	c.Send([]byte("data: hello\n\n"))
	c.Close(CloseServiceRestart, "shutdown")
	rest, err := io.ReadAll(cl)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(rest), "data: hello\n\nevent: close\ndata: 1012 shutdown\n\n") {
		t.Fatalf("stream ends %q", rest)
	}
	if ev := rec.waitClose(t); ev.info.Code != CloseServiceRestart {
		t.Fatalf("code %d", ev.info.Code)
	}
}

// TestFirstPingsSpread: connections opened together are not pinged
// together (firstPing): their first pings come within one interval, over
// more than a quarter of it.
func TestFirstPingsSpread(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval = 800 * time.Millisecond // a tick of 100 ms
	ts := startServer(t, cfg, serverOpts{})
	const n = 40
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialRaw(t, ts.addr, nil)
		ts.nextConn(t)
	}
	opened := time.Now()
	got := make(chan time.Duration, n)
	for _, rc := range clients {
		go func() { // readFrame, not rc.read: no t.Fatal off the test's goroutine
			_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if f, err := readFrame(rc.br); err == nil && f.Header.OpCode == ws.OpPing {
				got <- time.Since(opened)
			} else {
				got <- -1
			}
		}()
	}
	first, last := time.Hour, time.Duration(0)
	for range n {
		d := <-got
		if d < 0 {
			t.Fatal("a client's first frame was not a ping")
		}
		first, last = min(first, d), max(last, d)
	}
	if last > cfg.PingInterval+200*time.Millisecond {
		t.Fatalf("the last first ping came after %v, want within the interval %v", last, cfg.PingInterval)
	}
	if last-first < cfg.PingInterval/4 {
		t.Fatalf("first pings within %v (from %v to %v), want spread over a quarter of the interval or more", last-first, first, last)
	}
}

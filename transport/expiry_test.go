package transport

import (
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// These tests run on both drivers: make test runs the package again with
// -tags notify_noepoll.

// expiryConfig makes the timers tick every 500 ms (an eighth of the ping
// interval, on the event loop and the fallback alike): fine enough for
// expiries a second away, while the pings, 4 s apart, come late enough not
// to hide a timer that was not moved (the drivers look at the expiry on
// every timer).
func expiryConfig() Config {
	cfg := testConfig()
	cfg.PingInterval = 4 * time.Second
	return cfg
}

// lateBy bounds how late a timer may come: its tick (500 ms) and slack for
// a busy machine.
const lateBy = 1500 * time.Millisecond

// dialExpiring connects a client whose connection has handler h and expires
// at expiry; held, if set, runs before Attach. It returns once the driver
// serves the connection (on Linux, Attach only queues it for the loop): a
// first frame written by the driver came.
func dialExpiring(t *testing.T, cfg Config, h Handler, expiry time.Time, held func(*Conn)) (*rawClient, *Conn) {
	t.Helper()
	ts := startServer(t, cfg, serverOpts{
		conn: func(*http.Request) ConnOptions {
			return ConnOptions{Expiry: expiry, Messages: true, Handler: h}
		},
		held:  held,
		first: func(*Conn) [][]byte { return [][]byte{DataFrame("attached")} },
	})
	rc := dialRaw(t, ts.addr, nil)
	if s := rc.next(); s.payload != "attached" {
		t.Fatalf("first frame %v %q, want the one written at attach", s.op, s.payload)
	}
	return rc, ts.nextConn(t)
}

// seen is a frame the test client read, and when.
type seen struct {
	op      ws.OpCode
	payload string
	at      time.Time
}

func (s seen) closeCode() int {
	if s.op != ws.OpClose || len(s.payload) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16([]byte(s.payload)))
}

// next reads the next frame that is not a ping, answering pings as a
// browser would (the connection must not close as idle).
func (rc *rawClient) next() seen {
	rc.t.Helper()
	for {
		f := rc.read()
		if f.Header.OpCode == ws.OpPing {
			rc.write(clientFrame(true, 0, opPong, true, f.Payload))
			continue
		}
		return seen{op: f.Header.OpCode, payload: string(f.Payload), at: time.Now()}
	}
}

// readUntilClose returns the data frames up to the close frame, and that.
// onData, if set, sees each data frame as it comes.
func (rc *rawClient) readUntilClose(onData func(seen)) (data []seen, closing seen) {
	rc.t.Helper()
	for {
		s := rc.next()
		if s.op == ws.OpClose {
			return data, s
		}
		if onData != nil {
			onData(s)
		}
		data = append(data, s)
	}
}

// expectExpired checks that the connection closes with CloseTokenExpired,
// at expiry (not before, not lateBy after), and completes the handshake; it
// returns the data frames that came first.
func expectExpired(t *testing.T, rc *rawClient, rec *recorder, expiry time.Time, onData func(seen)) []seen {
	t.Helper()
	data, closing := rc.readUntilClose(onData)
	if code := closing.closeCode(); code != CloseTokenExpired {
		t.Fatalf("close code %d (%q), want %d", code, closing.payload, CloseTokenExpired)
	}
	if closing.at.Before(expiry) {
		t.Fatalf("closed %v before the expiry", expiry.Sub(closing.at))
	}
	if late := closing.at.Sub(expiry); late > lateBy {
		t.Fatalf("closed %v after the expiry", late)
	}
	rc.write(clientFrame(true, 0, opClose, true, closePayload(CloseTokenExpired, "")))
	rc.expectEOF()
	if ev := rec.waitClose(t); ev.info.Code != CloseTokenExpired {
		t.Fatalf("OnClose code %d", ev.info.Code)
	}
	return data
}

func TestSetExpiry(t *testing.T) {
	const (
		short = 600 * time.Millisecond
		long  = 1500 * time.Millisecond
	)
	tests := []struct {
		name    string
		initial time.Duration // ConnOptions.Expiry from now; 0: never
		set     time.Duration // SetExpiry to now+set
		held    bool          // SetExpiry before Attach rather than after
	}{
		{name: "later", initial: short, set: long},
		{name: "earlier", initial: time.Hour, set: short},
		{name: "from never", set: short},
		{name: "while held", initial: time.Hour, set: short, held: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			var initial time.Time
			if tt.initial != 0 {
				initial = start.Add(tt.initial)
			}
			want := start.Add(tt.set)
			var held func(*Conn)
			if tt.held {
				held = func(c *Conn) { c.SetExpiry(want) }
			}
			rec := newRecorder()
			rc, c := dialExpiring(t, expiryConfig(), rec, initial, held)
			if !tt.held {
				c.SetExpiry(want)
			}
			if !initial.IsZero() && !time.Now().Before(initial) {
				t.Fatalf("SetExpiry came %v after the first expiry: the machine is too slow for this test", time.Since(initial))
			}
			expectExpired(t, rc, rec, want, nil)
		})
	}
}

// TestSetExpiryNever: an expiry set to zero never comes. The server's first
// ping, a second after the connection, is sent by a timer run after the old
// expiry, which would have closed the connection instead; the connection
// ends only when the server closes it.
func TestSetExpiryNever(t *testing.T) {
	old := time.Now().Add(500 * time.Millisecond)
	cfg := expiryConfig()
	cfg.PingInterval = time.Second // a tick of 125 ms
	rc, c := dialExpiring(t, cfg, newRecorder(), old, nil)
	c.SetExpiry(time.Time{})
	if !time.Now().Before(old) {
		t.Fatal("SetExpiry came after the old expiry: the machine is too slow for this test")
	}
	if f := rc.read(); f.Header.OpCode != ws.OpPing {
		t.Fatalf("got %v %q, want a ping", f.Header.OpCode, f.Payload)
	}
	c.Close(CloseNormal, "bye")
	rc.expectClose(CloseNormal)
}

// TestSetExpiryConcurrent: SetExpiry from many goroutines at once, while
// frames are sent, and the driver taking each value up (run it with
// -race). Whichever value it saw last, the final one wins.
func TestSetExpiryConcurrent(t *testing.T) {
	rec := newRecorder()
	rc, c := dialExpiring(t, expiryConfig(), rec, time.Now().Add(time.Hour), nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 100 {
				var e time.Time // none, or later
				if i%4 != 0 {
					e = time.Now().Add(time.Hour + rand.N(time.Hour))
				}
				c.SetExpiry(e)
				if i%10 == 0 {
					c.Send(DataFrame("data"))
				}
			}
		})
	}
	wg.Wait()
	final := time.Now().Add(900 * time.Millisecond)
	done := make(chan struct{})
	go func() { // neither the test's goroutine nor the driver's
		defer close(done)
		c.SetExpiry(final)
	}()
	<-done
	if n := len(expectExpired(t, rc, rec, final, nil)); n != 80 {
		t.Errorf("the client read %d data frames, want 80", n)
	}
}

// TestSetExpiryWhenClosed: SetExpiry on a closed connection does nothing,
// also on one whose Attach failed (it never had a driver).
func TestSetExpiryWhenClosed(t *testing.T) {
	tests := []struct {
		name  string
		close func(t *testing.T) *Conn
	}{
		{"closed by the peer", closedByPeer},
		{"attach failed", attachFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.close(t)
			c.mu.Lock()
			before := c.expiry
			c.mu.Unlock()
			c.SetExpiry(time.Now().Add(time.Millisecond))
			c.SetExpiry(time.Time{})
			c.mu.Lock()
			after, retime := c.expiry, c.retime
			c.mu.Unlock()
			if after != before || retime {
				t.Fatalf("expiry %d (retime %v) after SetExpiry, want %d as before", after, retime, before)
			}
			if !c.Closed() {
				t.Fatal("the connection is open again")
			}
		})
	}
}

func closedByPeer(t *testing.T) *Conn {
	t.Helper()
	rec := newRecorder()
	rc, c := dialExpiring(t, expiryConfig(), rec, time.Now().Add(time.Hour), nil)
	rc.write(clientFrame(true, 0, opClose, true, closePayload(CloseNormal, "")))
	rc.expectClose(CloseNormal)
	if ev := rec.waitClose(t); ev.info.Code != CloseNormal {
		t.Fatalf("OnClose code %d", ev.info.Code)
	}
	t.Cleanup(func() {
		// Nothing comes of the calls: no second OnClose.
		if len(rec.closes) != 0 {
			t.Error("events after SetExpiry on a closed connection")
		}
	})
	return c
}

func attachFailed(t *testing.T) *Conn {
	t.Helper()
	srv, err := NewServer(expiryConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	_, server := tcpPair(t)
	c := srv.NewConn(ConnOptions{Expiry: time.Now().Add(time.Hour), Handler: newRecorder()})
	if err := srv.Attach(c, server, nil); err != ErrServerClosed {
		t.Fatalf("Attach after Close: %v", err)
	}
	return c
}

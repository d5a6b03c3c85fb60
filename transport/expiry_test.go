package transport

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/notify-dev/notify/internal/tcptest"
)

// These tests run on both drivers: make test runs the package again with
// -tags notify_noepoll.

// expiryConfig makes the timers tick every 500 ms (an eighth of the ping
// interval, on the event loop and the fallback alike): fine enough for
// expiries a second away, while the pings, 4 s apart, come late enough not
// to hide a timer that was not moved (the drivers look at the expiry on
// every timer).
func expiryConfig(notice time.Duration) Config {
	cfg := testConfig()
	cfg.PingInterval = 4 * time.Second
	cfg.ExpiryNotice = notice
	return cfg
}

// lateBy bounds how late a timer may come: its tick (500 ms) and slack for
// a busy machine.
const lateBy = 1500 * time.Millisecond

// noticeHandler records expiry notices and, as a protocol would, tells the
// client with a frame. The client message "refresh" moves the expiry to
// refreshTo from OnMessage, on the driver's goroutine.
type noticeHandler struct {
	*recorder
	notices   chan notice
	refreshTo time.Time // set before the connection is made
}

// notice is one OnExpiring call.
type notice struct {
	expiry time.Time // its argument
	at     time.Time // when it came
}

func (n notice) String() string {
	return fmt.Sprintf("notice of %v at %v", n.expiry.Format(time.StampMilli), n.at.Format(time.StampMilli))
}

func newNoticeHandler() *noticeHandler {
	return &noticeHandler{recorder: newRecorder(), notices: make(chan notice, 64)}
}

func (h *noticeHandler) OnExpiring(c *Conn, expiry time.Time) {
	h.notices <- notice{expiry: expiry, at: time.Now()}
	c.Send(DataFrame("expiring"))
}

func (h *noticeHandler) OnMessage(c *Conn, _ bool, p []byte) {
	if string(p) == "refresh" {
		c.SetExpiry(h.refreshTo)
	}
}

// noticesGiven returns the notices recorded so far.
func (h *noticeHandler) noticesGiven() []notice {
	var got []notice
	for len(h.notices) > 0 {
		got = append(got, <-h.notices)
	}
	return got
}

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
			h := newNoticeHandler()
			rc, c := dialExpiring(t, expiryConfig(0), h, initial, held)
			if !tt.held {
				c.SetExpiry(want)
			}
			if !initial.IsZero() && !time.Now().Before(initial) {
				t.Fatalf("SetExpiry came %v after the first expiry: the machine is too slow for this test", time.Since(initial))
			}
			expectExpired(t, rc, h.recorder, want, nil)
		})
	}
}

// TestSetExpiryNever: an expiry set to zero never comes. The server's first
// ping, a second after the connection, is sent by a timer run after the old
// expiry, which would have closed the connection instead (and given notice
// before); the connection ends only when the server closes it.
func TestSetExpiryNever(t *testing.T) {
	old := time.Now().Add(500 * time.Millisecond)
	h := newNoticeHandler()
	cfg := expiryConfig(400 * time.Millisecond) // due 100 ms before the old expiry
	cfg.PingInterval = time.Second              // a tick of 125 ms
	rc, c := dialExpiring(t, cfg, h, old, nil)
	c.SetExpiry(time.Time{})
	if !time.Now().Before(old) {
		t.Fatal("SetExpiry came after the old expiry: the machine is too slow for this test")
	}
	if f := rc.read(); f.Header.OpCode != ws.OpPing {
		t.Fatalf("got %v %q, want a ping", f.Header.OpCode, f.Payload)
	}
	c.Close(CloseNormal, "bye")
	rc.expectClose(CloseNormal)
	if got := h.noticesGiven(); len(got) != 0 {
		t.Fatalf("notices %v for a connection that never expires", got)
	}
}

func TestExpiryNotice(t *testing.T) {
	tests := []struct {
		name   string
		notice time.Duration // Config.ExpiryNotice
		expiry time.Duration // from now
		plain  bool          // the handler is no ExpiryNotifier
		want   int           // notices
	}{
		{name: "ahead", notice: 600 * time.Millisecond, expiry: 1500 * time.Millisecond, want: 1},
		{name: "within the notice at attach", notice: 5 * time.Second, expiry: 900 * time.Millisecond, want: 1},
		{name: "no notice configured", expiry: 600 * time.Millisecond},
		{name: "handler without OnExpiring", notice: 5 * time.Second, expiry: 600 * time.Millisecond, plain: true},
		{name: "expired at attach", notice: 5 * time.Second, expiry: -100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			expiry := start.Add(tt.expiry)
			h := newNoticeHandler()
			var handler Handler = h
			if tt.plain {
				handler = h.recorder
			}
			rc, _ := dialExpiring(t, expiryConfig(tt.notice), handler, expiry, nil)
			data := expectExpired(t, rc, h.recorder, expiry, nil)
			checkNotices(t, h, data, []time.Time{expiry}[:tt.want], tt.notice, start)
		})
	}
}

func TestExpiryNoticeMustNotBeNegative(t *testing.T) {
	cfg := expiryConfig(-time.Second)
	if _, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), "expiry notice") {
		t.Fatalf("NewServer with ExpiryNotice %v: %v, want an error naming it", cfg.ExpiryNotice, err)
	}
}

// checkNotices checks that the handler was given a notice of each expiry in
// want, in order, each ahead before it (or at once if that was before start,
// when the expiries were set) and before the expiry, and that the client
// read the handler's frame for each.
func checkNotices(t *testing.T, h *noticeHandler, data []seen, want []time.Time, ahead time.Duration, start time.Time) {
	t.Helper()
	got := h.noticesGiven()
	if len(got) != len(want) {
		t.Fatalf("%d notices %v, want %d", len(got), got, len(want))
	}
	frames := 0
	for _, s := range data {
		if s.payload == "expiring" {
			frames++
		}
	}
	if frames != len(want) {
		t.Fatalf("the client read %d notice frames, want %d", frames, len(want))
	}
	for i, e := range want {
		if !got[i].expiry.Equal(e) {
			t.Errorf("notice %d of expiry %v, want %v", i, got[i].expiry, e)
		}
		due := e.Add(-ahead)
		if early := due.Sub(got[i].at); early > 0 {
			t.Errorf("notice %d came %v early", i, early)
		}
		if late := got[i].at.Sub(latest(due, start)); late > lateBy {
			t.Errorf("notice %d came %v late", i, late)
		}
		if !got[i].at.Before(e) {
			t.Errorf("notice %d came %v after the expiry", i, got[i].at.Sub(e))
		}
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestExpiryNoticeAfterRefresh: the in-band refresh. The notice tells the
// client, whose answer makes OnMessage move the expiry later; the notice
// comes again for the new expiry, at which the connection closes.
func TestExpiryNoticeAfterRefresh(t *testing.T) {
	const notice = 600 * time.Millisecond
	start := time.Now()
	first, second := start.Add(1200*time.Millisecond), start.Add(2100*time.Millisecond)
	h := newNoticeHandler()
	h.refreshTo = second
	rc, _ := dialExpiring(t, expiryConfig(notice), h, first, nil)
	refreshed := false
	data := expectExpired(t, rc, h.recorder, second, func(s seen) {
		if s.payload == "expiring" && !refreshed {
			refreshed = true
			rc.write(clientFrame(true, 0, opText, true, []byte("refresh")))
		}
	})
	checkNotices(t, h, data, []time.Time{first, second}, notice, start)
}

// TestExpiryNoticeRaw: a raw (Server-Sent Events) connection is given the
// notice too, then closed with its own last bytes.
func TestExpiryNoticeRaw(t *testing.T) {
	srv, err := NewServer(expiryConfig(600 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client, server := tcptest.Pair(t)
	h := newNoticeHandler()
	expiry := time.Now().Add(900 * time.Millisecond)
	raw := &RawOptions{Close: func(code int, reason string) []byte {
		return []byte("event: close\ndata: " + reason + "\n\n")
	}}
	c := srv.NewConn(ConnOptions{Expiry: expiry, Raw: raw, Handler: rawNotices{h}})
	if err := srv.Attach(c, server, nil, nil); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	stream, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if want := "event: expiring\n\nevent: close\ndata: token expired\n\n"; string(stream) != want {
		t.Fatalf("stream %q, want %q", stream, want)
	}
	if got := h.noticesGiven(); len(got) != 1 || !got[0].expiry.Equal(expiry) {
		t.Fatalf("notices %v, want one of %v", got, expiry)
	}
	if ev := h.waitClose(t); ev.info.Code != CloseTokenExpired {
		t.Fatalf("OnClose code %d", ev.info.Code)
	}
}

// rawNotices writes the notice as an event-stream event.
type rawNotices struct{ *noticeHandler }

func (r rawNotices) OnExpiring(c *Conn, expiry time.Time) {
	r.notices <- notice{expiry: expiry, at: time.Now()}
	c.Send([]byte("event: expiring\n\n"))
}

// TestSetExpiryConcurrent: SetExpiry from many goroutines at once, while
// frames are sent, and the driver taking each value up (run it with
// -race). Whichever value it saw last, the final one wins.
func TestSetExpiryConcurrent(t *testing.T) {
	const notice = 600 * time.Millisecond
	h := newNoticeHandler()
	rc, c := dialExpiring(t, expiryConfig(notice), h, time.Now().Add(time.Hour), nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 100 {
				var e time.Time // none, or far enough that no notice is due
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
	start := time.Now()
	final := start.Add(900 * time.Millisecond) // the notice is due at once
	done := make(chan struct{})
	go func() { // neither the test's goroutine nor the driver's
		defer close(done)
		c.SetExpiry(final)
	}()
	<-done
	data := expectExpired(t, rc, h.recorder, final, nil)
	checkNotices(t, h, data, []time.Time{final}, notice, start)
	if n := len(data) - 1; n != 80 { // and the notice's
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
	h := newNoticeHandler()
	rc, c := dialExpiring(t, expiryConfig(time.Second), h, time.Now().Add(time.Hour), nil)
	rc.write(clientFrame(true, 0, opClose, true, closePayload(CloseNormal, "")))
	rc.expectClose(CloseNormal)
	if ev := h.waitClose(t); ev.info.Code != CloseNormal {
		t.Fatalf("OnClose code %d", ev.info.Code)
	}
	t.Cleanup(func() {
		// Nothing comes of the calls: no second OnClose, no notice.
		if len(h.closes) != 0 || len(h.notices) != 0 {
			t.Error("events after SetExpiry on a closed connection")
		}
	})
	return c
}

func attachFailed(t *testing.T) *Conn {
	t.Helper()
	srv, err := NewServer(expiryConfig(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	_, server := tcptest.Pair(t)
	c := srv.NewConn(ConnOptions{Expiry: time.Now().Add(time.Hour), Handler: newNoticeHandler()})
	if err := srv.Attach(c, server, nil, nil); err != ErrServerClosed {
		t.Fatalf("Attach after Close: %v", err)
	}
	return c
}

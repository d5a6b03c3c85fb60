package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/notify-dev/notify/internal/tcptest"
)

// relayNode is a server in front of another one: it relays every request to
// the other with RelayTo, and answers itself (418 "served here") when the
// request was not relayed.
type relayNode struct {
	srv    *Server
	http   *httptest.Server
	addr   string
	errs   chan error // RelayTo's result, per request
	closes atomic.Int32
	done   chan struct{} // closed by the first OnClose
}

func startRelayNode(t *testing.T, o RelayOptions) *relayNode {
	t.Helper()
	srv, err := NewServer(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	rn := &relayNode{srv: srv, errs: make(chan error, 16), done: make(chan struct{})}
	o.OnClose = func() {
		if rn.closes.Add(1) == 1 {
			close(rn.done)
		}
	}
	rn.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := srv.RelayTo(w, r, o)
		rn.errs <- err
		if errors.Is(err, ErrNotRelayed) {
			w.WriteHeader(http.StatusTeapot)
			_, _ = io.WriteString(w, "served here")
		}
	}))
	rn.addr = strings.TrimPrefix(rn.http.URL, "http://")
	t.Cleanup(func() {
		rn.http.Close()
		srv.Close()
	})
	return rn
}

func (rn *relayNode) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-rn.errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("RelayTo did not return within 10s")
	}
	return nil
}

// waitEnded waits for the relay's OnClose and checks it ran once.
func (rn *relayNode) waitEnded(t *testing.T) {
	t.Helper()
	select {
	case <-rn.done:
	case <-time.After(10 * time.Second):
		t.Fatal("OnClose did not run within 10s of both ends closing")
	}
	if n := rn.closes.Load(); n != 1 {
		t.Fatalf("OnClose ran %d times", n)
	}
}

// TestRelayToWebSocket: a WebSocket handshake relayed to the server that
// upgrades it; the replayed request carries the relay's headers, the
// client's bytes sent ahead and frames both ways get through, and the relay
// ends with the connection.
func TestRelayToWebSocket(t *testing.T) {
	seen := make(chan http.Header, 1)
	owner := startServer(t, testConfig(), serverOpts{
		conn: func(r *http.Request) ConnOptions {
			seen <- r.Header.Clone()
			return ConnOptions{Messages: true}
		},
		header: http.Header{"X-Notify-Node": {"owner"}},
	})
	rn := startRelayNode(t, RelayOptions{Addr: owner.addr, Header: http.Header{"X-Notify-Forwarded-By": {"front"}}})

	// The ping travels in the same write as the handshake.
	rc, resp := dialRawHeader(t, rn.addr, "X-Notify-Forwarded-By: forged\r\nX-Custom: kept\r\n",
		clientFrame(true, 0, opPing, true, []byte("ahead")))
	if err := rn.result(t); err != nil {
		t.Fatalf("RelayTo: %v", err)
	}
	if got := resp.Header.Get("X-Notify-Node"); got != "owner" {
		t.Errorf("response header X-Notify-Node %q, want the owner's", got)
	}
	h := <-seen
	if got := h.Values("X-Notify-Forwarded-By"); len(got) != 1 || got[0] != "front" {
		t.Errorf("owner saw X-Notify-Forwarded-By %q, want only the relay's", got)
	}
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("owner saw X-Forwarded-For %q, want the client's address", got)
	}
	if got := h.Get("X-Custom"); got != "kept" {
		t.Errorf("owner saw X-Custom %q, want the client's value", got)
	}
	if f := rc.read(); f.Header.OpCode != ws.OpPong || string(f.Payload) != "ahead" {
		t.Fatalf("got %v %q, want the owner's pong to the ping sent ahead", f.Header.OpCode, f.Payload)
	}

	c := owner.nextConn(t)
	c.Send(DataFrame("from owner"))
	if f := rc.read(); string(f.Payload) != "from owner" {
		t.Fatalf("client got %q", f.Payload)
	}
	rc.write(clientFrame(true, 0, opText, true, []byte("from client")))
	select {
	case m := <-owner.rec.msgs:
		if m.payload != "from client" {
			t.Fatalf("owner got %q", m.payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client's message did not reach the owner")
	}

	// The closing handshake goes through, the owner closes its socket, the
	// client sees the end and closes its own: both directions have ended.
	rc.write(clientFrame(true, 0, opClose, true, closePayload(CloseNormal, "")))
	rc.expectClose(CloseNormal)
	rc.expectEOF()
	rc.nc.Close()
	if ev := owner.rec.waitClose(t); ev.info.Code != CloseNormal {
		t.Fatalf("owner OnClose code %d, want %d", ev.info.Code, CloseNormal)
	}
	rn.waitEnded(t)
}

// eventStreamOwner is a plain net/http event stream (chunked): "one", then
// "two" once next is closed, then it waits for the client to hang up.
type eventStreamOwner struct {
	http   *httptest.Server
	seen   chan *http.Request // a copy of the request it got
	next   chan struct{}
	sawEnd chan struct{} // the client hung up
}

func startEventStreamOwner(t *testing.T) *eventStreamOwner {
	o := &eventStreamOwner{seen: make(chan *http.Request, 1), next: make(chan struct{}), sawEnd: make(chan struct{})}
	o.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.seen <- r.Clone(context.Background())
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Notify-Node", "owner")
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, "data: one\n\n")
		_ = rc.Flush()
		select {
		case <-o.next:
		case <-r.Context().Done():
			return // the test failed and went
		}
		_, _ = io.WriteString(w, "data: two\n\n")
		_ = rc.Flush()
		<-r.Context().Done() // the client hung up, through the relay
		close(o.sawEnd)
	}))
	t.Cleanup(o.http.Close)
	return o
}

// TestRelayToEventStream: an event stream (200 text/event-stream) relayed
// as it came; the client's hang-up reaches the owner, and the relay ends.
func TestRelayToEventStream(t *testing.T) {
	owner := startEventStreamOwner(t)
	rn := startRelayNode(t, RelayOptions{
		Addr:   strings.TrimPrefix(owner.http.URL, "http://"),
		Header: http.Header{"X-Notify-Forwarded-By": {"front"}},
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequest(http.MethodGet, rn.http.URL+"/notify/sse?topic=a", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Notify-Forwarded-By", "forged")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := rn.result(t); err != nil {
		t.Fatalf("RelayTo: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Notify-Node") != "owner" {
		t.Fatalf("status %d, X-Notify-Node %q: want the owner's 200", resp.StatusCode, resp.Header.Get("X-Notify-Node"))
	}
	r := <-owner.seen
	if r.RequestURI != "/notify/sse?topic=a" || r.Header.Get("X-Notify-Forwarded-By") != "front" || r.Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Fatalf("owner saw %s with %v", r.RequestURI, r.Header)
	}
	expect := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != want {
			t.Fatalf("read %q %v, want %q", got, err, want)
		}
	}
	expect("data: one\n\n")
	close(owner.next)
	expect("data: two\n\n")

	resp.Body.Close() // hangs up: the body is unfinished
	select {
	case <-owner.sawEnd:
	case <-time.After(10 * time.Second):
		t.Fatal("the owner did not see the client go")
	}
	rn.waitEnded(t)
}

// TestRelayToNotRelayed: when the other server cannot take the request,
// RelayTo says why and leaves the response to the caller.
func TestRelayToNotRelayed(t *testing.T) {
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	t.Cleanup(refuse.Close)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "not a stream")
	}))
	t.Cleanup(plain.Close)
	silent := tcptest.Listen(t, nil)
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goneAddr := gone.Addr().String()
	gone.Close()

	tests := []struct {
		name, addr, why string
	}{
		{"refused", strings.TrimPrefix(refuse.URL, "http://"), "answered 403"},
		{"200 without an event stream", strings.TrimPrefix(plain.URL, "http://"), "answered 200"},
		{"unreachable", goneAddr, "dial"},
		{"no answer in time", silent, "read response"},
		{"no address", "", "no address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rn := startRelayNode(t, RelayOptions{Addr: tt.addr, HandshakeTimeout: 200 * time.Millisecond})
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get(rn.http.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = rn.result(t)
			if !errors.Is(err, ErrNotRelayed) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("RelayTo: %v, want ErrNotRelayed saying %q", err, tt.why)
			}
			if resp.StatusCode != http.StatusTeapot || string(body) != "served here" {
				t.Fatalf("client got %d %q, want the caller's own answer", resp.StatusCode, body)
			}
			if n := rn.closes.Load(); n != 0 {
				t.Fatalf("OnClose ran %d times for a request not relayed", n)
			}
		})
	}
}

// TestRelayToFailsAfterAccept: the owner accepted, then the relay could not
// start (this server is closed): the error is not ErrNotRelayed, both
// connections end, and OnClose does not run.
func TestRelayToFailsAfterAccept(t *testing.T) {
	owner := startServer(t, testConfig(), serverOpts{})
	rn := startRelayNode(t, RelayOptions{Addr: owner.addr})
	rn.srv.Close()

	nc, err := net.Dial("tcp", rn.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, handshakeRequest(rn.addr, "")); err != nil {
		t.Fatal(err)
	}
	err = rn.result(t)
	if err == nil || errors.Is(err, ErrNotRelayed) || !errors.Is(err, ErrServerClosed) {
		t.Fatalf("RelayTo: %v, want ErrServerClosed and not ErrNotRelayed", err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(nc); err != nil || len(got) != 0 {
		t.Fatalf("client read %q %v, want the connection closed with nothing written", got, err)
	}
	if ev := owner.rec.waitClose(t); ev.info.Code != CloseAbnormal {
		t.Fatalf("owner OnClose code %d, want %d", ev.info.Code, CloseAbnormal)
	}
	if n := rn.closes.Load(); n != 0 {
		t.Fatalf("OnClose ran %d times after a failed relay", n)
	}
}

func TestReplayedRequest(t *testing.T) {
	const line = "GET /notify/ws?token=abc HTTP/1.1\r\nHost: notify.example\r\n"
	tests := []struct {
		name    string
		client  http.Header
		replace http.Header
		want    string
	}{
		{
			"replaced header, forwarded-for added",
			http.Header{"Upgrade": {"websocket"}, "X-Notify-Forwarded-By": {"forged"}, "Cookie": {"a=1", "b=2"}},
			http.Header{"X-Notify-Forwarded-By": {"n1"}},
			line + "Cookie: a=1\r\nCookie: b=2\r\nUpgrade: websocket\r\nX-Notify-Forwarded-By: n1\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n",
		},
		{
			"the client's forwarded-for kept",
			http.Header{"X-Forwarded-For": {"198.51.100.1"}},
			nil,
			line + "X-Forwarded-For: 198.51.100.1\r\n\r\n",
		},
		{
			"forwarded-for replaced, by a name in another case",
			http.Header{"X-Forwarded-For": {"198.51.100.1"}},
			http.Header{"x-forwarded-for": {"203.0.113.9"}},
			line + "x-forwarded-for: 203.0.113.9\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://notify.example/notify/ws?token=abc", nil)
			r.RemoteAddr = "192.0.2.7:5555"
			r.Header = tt.client
			if got := string(replayedRequest(r, tt.replace)); got != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestRelayToPassesOnRefusals: a refusal PassOn names goes to the client as
// the other server gave it (status, Content-Type, Retry-After, body); one
// it does not name leaves the answer to the caller.
func TestRelayToPassesOnRefusals(t *testing.T) {
	full := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"error":{"message":"too many connections for this user"}}`)
	}))
	t.Cleanup(full.Close)
	for _, tt := range []struct {
		name   string
		passOn func(int) bool
		status int
		body   string
	}{
		{"named", func(s int) bool { return s == http.StatusTooManyRequests }, http.StatusTooManyRequests, `{"error":{"message":"too many connections for this user"}}`},
		{"not named", func(s int) bool { return s == http.StatusForbidden }, http.StatusTeapot, "served here"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rn := startRelayNode(t, RelayOptions{Addr: strings.TrimPrefix(full.URL, "http://"), PassOn: tt.passOn})
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr}).Get(rn.http.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || string(body) != tt.body {
				t.Fatalf("client got %d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			err = rn.result(t)
			if passed := tt.status == http.StatusTooManyRequests; passed {
				if !errors.Is(err, ErrPassedOn) || errors.Is(err, ErrNotRelayed) || resp.Header.Get("Retry-After") != "3" {
					t.Fatalf("RelayTo: %v, Retry-After %q", err, resp.Header.Get("Retry-After"))
				}
			} else if !errors.Is(err, ErrNotRelayed) {
				t.Fatalf("RelayTo: %v, want ErrNotRelayed", err)
			}
		})
	}
}

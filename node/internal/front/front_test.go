package front

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/notify-dev/notify/internal/await"
)

func TestRouteOf(t *testing.T) {
	paths := []string{"/notify/ws"}
	tests := []struct {
		in      string
		want    route
		decided bool
	}{
		{"GET /notify/ws HTTP/1.1\r\n", routeDirect, true},
		{"GET /notify/ws?topic=a HTTP/1.1\r\n", routeDirect, true},
		{"GET /notify/wsx HTTP/1.1\r\n", routeHTTP, true},
		{"GET /notify/w", routeNone, false},
		{"GE", routeNone, false},
		{"GET /healthz HTTP/1.1\r\n", routeHTTP, true},
		{"POST /notify/ws HTTP/1.1\r\n", routeHTTP, true},
		{"get /notify/ws HTTP/1.1\r\n", routeHTTP, true},
		{"\x16\x03\x01", routeHTTP, true}, // a TLS hello: net/http answers it
	}
	for _, tt := range tests {
		got, decided := routeOf([]byte(tt.in), paths)
		if got != tt.want || decided != tt.decided {
			t.Errorf("routeOf(%q) = %v, %t; want %v, %t", tt.in, got, decided, tt.want, tt.decided)
		}
	}
}

// testFront serves mux through a front on a free port until the test ends.
func testFront(t *testing.T, mux http.Handler, mutate func(*Config)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Listener: ln, Paths: []string{"/notify/ws"},
		Server: &http.Server{Handler: mux, ReadHeaderTimeout: 2 * time.Second, MaxHeaderBytes: 4 << 10}, StopTimeout: time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ln.Addr().String()
}

// exchange writes req on a new connection and returns everything read until
// the server closes it (or 3 s pass).
func exchange(t *testing.T, addr string, req ...string) string {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, part := range req {
		if _, err := io.WriteString(nc, part); err != nil {
			t.Fatal(err)
		}
		// Pacing, not a wait: nothing on the server side can be observed
		// between the parts; this makes them arrive as separate segments.
		time.Sleep(20 * time.Millisecond)
	}
	_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(nc)
	return string(b)
}

// hijacker answers with what it saw, raw, then the bytes that followed the
// head, and closes. DIRECT: the front's route served it, not net/http.
func hijacker(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		how := "HIJACKED"
		if _, ok := w.(*directWriter); ok {
			how = "DIRECT"
		}
		nc, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer nc.Close()
		extra := make([]byte, rw.Reader.Buffered())
		_, _ = io.ReadFull(rw.Reader, extra)
		if r.RemoteAddr == "" || r.Context().Err() != nil {
			t.Errorf("request: remote %q, context %v", r.RemoteAddr, r.Context().Err())
		}
		_, _ = rw.WriteString(how + " " + r.URL.Path + " " + r.URL.Query().Get("topic") + " " + r.Header.Get("X-A") + " [" + string(extra) + "]")
		_ = rw.Flush()
	}
}

func TestDirectRoute(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/notify/ws", func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Do") {
		case "refuse":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":"origin not allowed"}`)
		case "panic":
			panic("handler bug")
		default:
			hijacker(t)(w, r)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "HTTP "+r.Method+" "+r.URL.Path)
	})
	addr := testFront(t, mux, nil)

	tests := []struct {
		name string
		req  []string
		want []string // in the reply, in order
		not  string
	}{
		{"hijacked, bytes after the head passed on", []string{"GET /notify/ws?topic=t HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nFRAME"},
			[]string{"DIRECT /notify/ws t 1 [FRAME]"}, "HTTP/1.1"},
		{"request line in pieces", []string{"GET /noti", "fy/ws HTTP/1.1\r\nHost: x\r\n", "X-A: 2\r\n\r\n"},
			[]string{"DIRECT /notify/ws  2 []"}, "HTTP/1.1"},
		{"refused: answered and closed", []string{"GET /notify/ws HTTP/1.1\r\nHost: x\r\nX-Do: refuse\r\n\r\n"},
			[]string{"HTTP/1.1 403 Forbidden\r\n", "Connection: close\r\n", "Content-Length: 30\r\n", "\r\n\r\n{\"error\":\"origin not allowed\"}"}, ""},
		{"handler panic: closed without an answer", []string{"GET /notify/ws HTTP/1.1\r\nHost: x\r\nX-Do: panic\r\n\r\n"}, nil, "HTTP"},
		{"head too large", []string{"GET /notify/ws HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 20<<10) + "\r\n\r\n"},
			[]string{"HTTP/1.1 431 "}, ""},
		{"malformed head", []string{"GET /notify/ws HTTP/1.1\r\nno colon here\r\n\r\n"}, []string{"HTTP/1.1 400 "}, ""},
		{"other paths: net/http, kept alive", []string{"GET /notify/wsx HTTP/1.1\r\nHost: x\r\n\r\nPOST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
			[]string{"HTTP GET /notify/wsx", "HTTP POST /other"}, "DIRECT"},
		{"a handshake after another request: net/http's", []string{"GET /x HTTP/1.1\r\nHost: x\r\n\r\nGET /notify/ws HTTP/1.1\r\nHost: x\r\n\r\n"},
			[]string{"HTTP GET /x", "HIJACKED /notify/ws"}, "DIRECT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := exchange(t, addr, tt.req...)
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("reply %q: no %q (in order)", got, w)
				}
				rest = rest[i+len(w):]
			}
			if tt.not != "" && strings.Contains(got, tt.not) {
				t.Fatalf("reply %q has %q", got, tt.not)
			}
		})
	}
}

// TestStop: a connection that sent nothing is closed at once by a stop; a
// handshake in flight finishes first; net/http's keep-alive connection is
// closed; Run returns (and TestMain finds nothing left running).
func TestStop(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/notify/ws", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "late answer")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Listener: ln, Paths: []string{"/notify/ws"}, Server: &http.Server{Handler: mux}, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	silent := dial(t, ln.Addr().String())
	inFlight := dial(t, ln.Addr().String())
	_, _ = io.WriteString(inFlight, "GET /notify/ws HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	keptAlive := dial(t, ln.Addr().String())
	_, _ = io.WriteString(keptAlive, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(keptAlive), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("net/http route: %v %v", resp, err)
	}
	resp.Body.Close()

	cancel()
	if b := readAll(silent); b != "" {
		t.Errorf("silent connection got %q", b)
	}
	close(release)
	if b := readAll(inFlight); !strings.Contains(b, "late answer") {
		t.Errorf("handshake in flight got %q, want its answer", b)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := keptAlive.Read(make([]byte, 1)); err == nil {
		t.Error("keep-alive connection still open after Run returned")
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

func readAll(nc net.Conn) string {
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(nc)
	return string(b)
}

// TestListenerFails: a listener closed underneath the front ends Run with
// an error, after the front has wound down (it hung before).
func TestListenerFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Listener: ln, Paths: []string{"/notify/ws"}, Server: &http.Server{Handler: http.NotFoundHandler()}, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	c := dial(t, ln.Addr().String()) // the front is accepting
	_, _ = io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Run = %v, want an accept error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its listener closed")
	}
}

// goroutineID is the calling goroutine's number, from its stack's first
// line ("goroutine 12 [running]:").
func goroutineID() string {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(b), "goroutine "), " ")
	return id
}

// TestServerGoroutines: the goroutine that served one connection serves
// the next ones accepted while it idles, and ends after ServerIdle without
// one.
func TestServerGoroutines(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/notify/ws", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "g="+goroutineID())
	})
	served := func(t *testing.T, addr string) string {
		t.Helper()
		got := exchange(t, addr, "GET /notify/ws HTTP/1.1\r\nHost: x\r\n\r\n")
		_, id, ok := strings.Cut(got, "\r\n\r\ng=")
		if !ok {
			t.Fatalf("reply %q: no goroutine id", got)
		}
		return id
	}

	t.Run("reused", func(t *testing.T) {
		addr := testFront(t, mux, func(c *Config) { c.ServerIdle = time.Minute })
		// One at a time: each is accepted after the one before was
		// answered, mostly while its goroutine idles (it may not have
		// reached its wait yet; then a second goroutine starts).
		ids := map[string]bool{}
		for range 20 {
			ids[served(t, addr)] = true
		}
		if len(ids) > 5 {
			t.Fatalf("20 connections one after another served by %d goroutines, want them reused", len(ids))
		}
	})
	t.Run("ends when idle", func(t *testing.T) {
		addr := testFront(t, mux, func(c *Config) { c.ServerIdle = 50 * time.Millisecond })
		id := served(t, addr)
		gone := await.Poll(5*time.Second, func() bool {
			b := make([]byte, 1<<20)
			return !strings.Contains(string(b[:runtime.Stack(b, true)]), "goroutine "+id+" [")
		})
		if !gone {
			t.Fatalf("goroutine %s still there 5 s after its connection was served (ServerIdle 50ms)", id)
		}
	})
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// A client holds one WebSocket of one user through haproxy, reconnecting
// after every disconnect as the contract asks (1012 and dropped
// connections), and records everything it sees: one session per
// connection, with the sequence numbers of the messages it received.

// session is one connection of a client.
type session struct {
	node  string    // X-Notify-Node: the node that serves it
	lb    string    // X-Lb-Server: the node haproxy sent the TCP connection to
	start time.Time // dial began
	ready time.Time // the state frame was read

	seqs []int       // payload sequence numbers, in arrival order
	at   []time.Time // when each arrived

	// With history (a resume client, ?envelope=1 and ?since=):
	since     string   // the cursor it resumed from ("": none)
	cursor    string   // the state frame's "cursor"
	recovered *bool    // the state frame's "recovered" (nil: not asked)
	cursors   []string // each message's cursor, beside seqs

	closed   bool
	closedAt time.Time
	code     int // close code; 1006 when the connection dropped without one
	reason   string
}

// closeEvent is one end of a session, as the client saw it.
type closeEvent struct {
	at     time.Time
	code   int
	reason string
	node   string
	lb     string
}

// kind names a close the way the tests expect it.
func (e closeEvent) kind() string {
	switch {
	case e.code == 1012 && e.reason == "moved":
		return "moved"
	case e.code == 1012 && e.reason == "shutdown":
		return "shutdown"
	case e.code == 1006:
		return "dropped"
	}
	return fmt.Sprintf("code %d %q", e.code, e.reason)
}

const closeAbnormal = 1006

type client struct {
	w    *world
	idx  int
	user string
	hdr  ws.HandshakeHeader
	// resume: ?envelope=1, and ?since=<the last cursor seen> on every
	// reconnect (set before it runs).
	resume bool

	mu       sync.Mutex
	sessions []*session
	closes   []closeEvent
	dialErrs int
	lastErr  string
	bad      []string // protocol violations
	conn     net.Conn // current connection, nil between sessions
	stopped  bool     // no reconnect (an unexpected close code)
	last     string   // resume: the newest cursor seen (state frame, then messages)

	wmu sync.Mutex // serializes writes on conn
}

func newClient(w *world, idx int, user, token string) *client {
	return &client{
		w: w, idx: idx, user: user,
		hdr: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}}),
	}
}

func (c *client) String() string { return fmt.Sprintf("client %d (user %s)", c.idx, c.user) }

func (c *client) violation(format string, args ...any) {
	c.mu.Lock()
	c.bad = append(c.bad, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// current returns the client's latest session and whether it is open.
func (c *client) current() (*session, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sessions) == 0 {
		return nil, false
	}
	s := c.sessions[len(c.sessions)-1]
	return s, !s.closed && c.conn != nil
}

// run connects, reads, and reconnects until ctx ends.
func (c *client) run(ctx context.Context) {
	fails := 0
	for ctx.Err() == nil {
		s, conn, r, err := c.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.dialErrs++
			c.lastErr = err.Error()
			c.mu.Unlock()
			fails++
			// Jittered exponential backoff: 25ms, 50ms ... 800ms.
			sleep(ctx, jitter(25*time.Millisecond<<min(fails-1, 5)))
			continue
		}
		fails = 0
		ev := c.read(s, conn, r)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.closes = append(c.closes, ev)
		if ev.code != 1012 && ev.code != closeAbnormal {
			c.stopped = true
			c.bad = append(c.bad, fmt.Sprintf("closed with %s by %s: not reconnecting", ev.kind(), ev.node))
		}
		stop := c.stopped
		c.mu.Unlock()
		if stop {
			return
		}
		// The contract: reconnect with jitter.
		sleep(ctx, jitter(50*time.Millisecond))
	}
}

// jitter is a random duration in [d/2, 3d/2).
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d) }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// dial connects through haproxy and reads the connect and state frames.
func (c *client) dial(ctx context.Context) (*session, net.Conn, *bufio.Reader, error) {
	select {
	case c.w.dialSem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, nil, ctx.Err()
	}
	defer func() { <-c.w.dialSem }()

	s := &session{start: time.Now()}
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		Header:  c.hdr,
		OnHeader: func(k, v []byte) error {
			switch {
			case bytes.EqualFold(k, []byte("X-Notify-Node")):
				s.node = string(v)
			case bytes.EqualFold(k, []byte("X-Lb-Server")):
				s.lb = string(v)
			}
			return nil
		},
	}
	conn, br, _, err := d.Dial(ctx, c.sessionURL(s))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial: %w", err)
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	fail := func(format string, args ...any) (*session, net.Conn, *bufio.Reader, error) {
		conn.Close()
		err := fmt.Errorf(format, args...)
		c.violation("session via %s served by %s: %v", s.lb, s.node, err)
		return nil, nil, nil, err
	}
	if s.node == "" || s.lb == "" {
		return fail("handshake response without X-Notify-Node (%q) or X-Lb-Server (%q)", s.node, s.lb)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.readHello(s, conn, br); err != nil {
		if v, ok := err.(violation); ok {
			return fail("%s", v)
		}
		conn.Close()
		return nil, nil, nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	s.ready = time.Now()
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.conn = conn
	if c.last == "" {
		// The first session: messages after its state frame are owed.
		// A resumed one keeps its since until the replay moves it on.
		c.last = s.cursor
	}
	c.mu.Unlock()
	return s, conn, br, nil
}

// sessionURL is where session s connects: with resume, envelope frames
// from the last cursor seen on (s.since).
func (c *client) sessionURL(s *session) string {
	if !c.resume {
		return c.w.url
	}
	c.mu.Lock()
	s.since = c.last
	c.mu.Unlock()
	if s.since == "" {
		return c.w.url + "?envelope=1"
	}
	return c.w.url + "?envelope=1&since=" + neturl.QueryEscape(s.since)
}

// violation is a protocol violation readHello found.
type violation string

func (v violation) Error() string { return string(v) }

// readHello reads the connect and state frames of session s.
func (c *client) readHello(s *session, conn net.Conn, br *bufio.Reader) error {
	for i, want := range []string{"connect", "state"} {
		op, p, err := c.readData(conn, br)
		if err != nil {
			return fmt.Errorf("reading the %s frame from %s: %w", want, s.node, err)
		}
		var f struct {
			Kind      string          `json:"kind"`
			UserID    string          `json:"userID"`
			State     json.RawMessage `json:"state"`
			Cursor    string          `json:"cursor"`
			Recovered *bool           `json:"recovered"`
		}
		switch {
		case op != ws.OpText || json.Unmarshal(p, &f) != nil || f.Kind != want:
			return violation(fmt.Sprintf("frame %d is %v %q, want the %s frame", i+1, op, p, want))
		case want == "connect" && f.UserID != c.user:
			return violation(fmt.Sprintf("connect frame for user %q", f.UserID))
		case want == "state" && string(f.State) != "{}":
			return violation(fmt.Sprintf("state %s, want {}", f.State))
		}
		s.cursor, s.recovered = f.Cursor, f.Recovered
	}
	return nil
}

// errClosed carries a close frame out of readData.
type errClosed struct {
	code   int
	reason string
}

func (e errClosed) Error() string { return fmt.Sprintf("closed %d %q", e.code, e.reason) }

// readData returns the next data frame, answering pings and close frames.
func (c *client) readData(conn net.Conn, r *bufio.Reader) (ws.OpCode, []byte, error) {
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return 0, nil, err
		}
		if h.Masked || h.Length > 1<<20 || h.Rsv != 0 {
			return 0, nil, fmt.Errorf("bad frame header %+v", h)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			return 0, nil, err
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if !h.Fin {
				return 0, nil, fmt.Errorf("fragmented data frame")
			}
			return h.OpCode, p, nil
		case ws.OpPing:
			c.write(conn, ws.NewPongFrame(p))
		case ws.OpPong:
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			// Echo the close, as the protocol asks, then hang up.
			c.write(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(code, "")))
			return 0, nil, errClosed{int(code), reason}
		default:
			return 0, nil, fmt.Errorf("unexpected opcode %v", h.OpCode)
		}
	}
}

func (c *client) write(conn net.Conn, f ws.Frame) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_ = ws.WriteFrame(conn, ws.MaskFrameInPlace(f))
}

// read records the messages of a session until it ends.
func (c *client) read(s *session, conn net.Conn, r *bufio.Reader) closeEvent {
	prefix := c.user + ":"
	var ev closeEvent
	for {
		op, p, err := c.readData(conn, r)
		if err != nil {
			if ce, ok := err.(errClosed); ok {
				ev.code, ev.reason = ce.code, ce.reason
			} else {
				ev.code, ev.reason = closeAbnormal, err.Error()
			}
			break
		}
		now := time.Now()
		payload, cursor := string(p), ""
		if c.resume {
			var e struct {
				Kind   string `json:"kind"`
				Cursor string `json:"cursor"`
				Data   string `json:"data"`
			}
			if op != ws.OpText || json.Unmarshal(p, &e) != nil || e.Kind != "message" || e.Cursor == "" {
				c.violation("session served by %s: unexpected frame %v %q, want an envelope with a cursor", s.node, op, p)
				continue
			}
			payload, cursor = e.Data, e.Cursor
		}
		rest, ok := strings.CutPrefix(payload, prefix)
		seq, err := strconv.Atoi(rest)
		if op != ws.OpText || !ok || err != nil {
			c.violation("session served by %s: unexpected message %v %q", s.node, op, p)
			continue
		}
		c.mu.Lock()
		s.seqs = append(s.seqs, seq)
		s.at = append(s.at, now)
		if c.resume {
			s.cursors = append(s.cursors, cursor)
			c.last = cursor
		}
		c.mu.Unlock()
	}
	conn.Close()
	ev.at, ev.node, ev.lb = time.Now(), s.node, s.lb
	c.mu.Lock()
	s.closed, s.closedAt, s.code, s.reason = true, ev.at, ev.code, ev.reason
	c.conn = nil
	c.mu.Unlock()
	return ev
}

// close ends the client for good (the world's context is already done).
func (c *client) close() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		c.write(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
		conn.Close()
	}
}

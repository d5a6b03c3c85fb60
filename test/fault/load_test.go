//go:build linux && fault

package fault

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/redis/go-redis/v9"

	"github.com/notify-dev/notify/auth"
)

// The load: a publisher sends every user one message in turn, spread
// evenly over the second (rate messages/s in all, 20 users per 10 ms tick
// at 2,000/s), each "<seq>:<unix ns>" with the user's own sequence number.
// Most users get plain PUBLISH notify:<id> (no history, at most once);
// the resume users get FCALL notify_publish (history), and their clients
// connect with ?envelope=1 and resume with ?since= after every close.
//
// Every publish is logged (when it began, whether Redis answered), so a
// check can say, per client, which messages it was owed and which it got.

// user is one user id, its token and its publish log.
type user struct {
	idx    int
	id     string
	resume bool // published with FCALL notify_publish; its clients resume
	token  string

	// The publish log, by sequence number - 1; appended by the publisher
	// under world.pubMu (readers copy the slice headers under it).
	pubAt []int64 // unix ns when the publish began
	ok    []bool  // Redis answered it (false: failed or timed out, not owed)
}

// Client kinds.
const (
	kindRaw     = iota // frames verbatim, no resume
	kindResume         // ?envelope=1&since=<cursor>
	kindStopper        // raw, joins the bulk topic; stops reading on cue (scenario 7)
)

// world is one scenario's users, clients and publisher.
type world struct {
	c       *cluster
	url     string
	users   []*user
	clients []*client
	epoch   time.Time // arrival times are kept as ns since this
	dialSem chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	rdb     *redis.Client
	pubMu   sync.RWMutex
	pubStop func()
	sent    atomic.Int64 // publishes attempted
	failed  atomic.Int64 // publishes Redis did not answer

	latOn atomic.Bool // record the latencies of readers' messages
	latMu sync.Mutex
	lat   []int32 // µs, since the last takeLatencies

	bulkBytes atomic.Int64 // bulk-topic bytes received by stoppers
}

func newWorld(c *cluster) *world {
	sc := c.sc
	ctx, cancel := context.WithCancel(context.Background())
	w := &world{
		c:       c,
		url:     "ws://" + c.lb.addr + "/notify/ws",
		epoch:   time.Now(),
		dialSem: make(chan struct{}, 128),
		ctx:     ctx,
		cancel:  cancel,
		rdb: redis.NewClient(&redis.Options{
			Addr: c.redis.addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
			// Never retry: a retried PUBLISH that Redis had run would be
			// a duplicate the check blames on the server.
			MaxRetries: -1, PoolSize: 8, ContextTimeoutEnabled: true,
		}),
	}
	now := time.Now()
	for i := range sc.users {
		u := &user{idx: i, id: fmt.Sprintf("u%04d", i), resume: i < sc.resumeUsers}
		var topics []string
		if i >= sc.users-c.opts.stopperUsers {
			topics = []string{bulkTopic}
		}
		tok, err := auth.Sign(auth.Config{Secret: jwtSecret}, u.id, topics, 24*time.Hour, now)
		if err != nil {
			c.t.Fatal(err)
		}
		u.token = tok
		w.users = append(w.users, u)
		kind := kindRaw
		switch {
		case u.resume:
			kind = kindResume
		case topics != nil:
			kind = kindStopper
		}
		for range sc.perUser {
			w.clients = append(w.clients, newClient(w, len(w.clients), u, kind))
		}
	}
	c.t.Cleanup(w.stop)
	return w
}

const bulkTopic = "bulk"

// stop ends the publisher and every client.
func (w *world) stop() {
	if w.pubStop != nil {
		w.pubStop()
	}
	w.cancel()
	for _, c := range w.clients {
		c.hangUp()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		w.c.t.Errorf("clients did not stop within 15 s")
	}
	_ = w.rdb.Close()
}

// since is t as the ns offset arrival times are kept in.
func (w *world) since(t time.Time) int64 { return t.Sub(w.epoch).Nanoseconds() }

func (w *world) at(ns int64) time.Time { return w.epoch.Add(time.Duration(ns)) }

// ---- the publisher ----

const pubTick = 10 * time.Millisecond

var debugPub = os.Getenv("NOTIFY_FAULT_DEBUG") != ""

// startPublisher publishes rate messages per second until stopped.
func (w *world) startPublisher() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		perTick := max(1, w.c.sc.rate*int(pubTick)/int(time.Second))
		tk := time.NewTicker(pubTick)
		defer tk.Stop()
		next := 0
		batch := make([]*user, 0, perTick)
		seqs := make([]int, 0, perTick)
		cmds := make([]redis.Cmder, 0, perTick)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			batch, seqs, cmds = batch[:0], seqs[:0], cmds[:0]
			now := time.Now()
			w.pubMu.Lock()
			for range perTick {
				u := w.users[next]
				next = (next + 1) % len(w.users)
				u.pubAt = append(u.pubAt, now.UnixNano())
				u.ok = append(u.ok, false)
				batch = append(batch, u)
				seqs = append(seqs, len(u.pubAt))
			}
			w.pubMu.Unlock()
			pipe := w.rdb.Pipeline()
			for i, u := range batch {
				payload := strconv.Itoa(seqs[i]) + ":" + strconv.FormatInt(now.UnixNano(), 10)
				if u.resume {
					cmds = append(cmds, pipe.FCall(ctx, "notify_publish", []string{"notify:" + u.id}, payload))
				} else {
					cmds = append(cmds, pipe.Publish(ctx, "notify:"+u.id, payload))
				}
			}
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			_, execErr := pipe.Exec(pctx)
			pcancel()
			if debugPub && (execErr != nil || time.Since(now) > 200*time.Millisecond) {
				var errs []string
				for i, cmd := range cmds {
					errs = append(errs, fmt.Sprintf("%s#%d:%v", batch[i].id, seqs[i], cmd.Err()))
				}
				fmt.Printf("DEBUG tick %s took %s: %v %v\n", now.Format("15:04:05.000"), time.Since(now), execErr, errs)
			}
			w.sent.Add(int64(len(batch)))
			w.pubMu.Lock()
			for i, u := range batch {
				ok := cmds[i].Err() == nil
				u.ok[seqs[i]-1] = ok
				if !ok {
					w.failed.Add(1)
				}
			}
			w.pubMu.Unlock()
		}
	}()
	var once sync.Once
	w.pubStop = func() { once.Do(func() { cancel(); <-done }) }
}

// pubLog is a copy of the slice headers of every user's publish log: what
// was published up to now (the entries never change once ok is set, and
// the check only reads those published well before).
func (w *world) pubLog() (at [][]int64, ok [][]bool) {
	w.pubMu.RLock()
	defer w.pubMu.RUnlock()
	at, ok = make([][]int64, len(w.users)), make([][]bool, len(w.users))
	for i, u := range w.users {
		at[i], ok[i] = u.pubAt, slices.Clone(u.ok)
	}
	return at, ok
}

// bulk publishes size-byte messages to the bulk topic every interval until
// the returned stop.
func (w *world) bulk(size int, every time.Duration) (stop func()) {
	payload := "B" + string(bytes.Repeat([]byte{'x'}, size-1))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			_ = w.rdb.Publish(pctx, "notify_topic:"+bulkTopic, payload).Err()
			pcancel()
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// takeLatencies returns the readers' latencies recorded since the last call.
func (w *world) takeLatencies() []int32 {
	w.latMu.Lock()
	defer w.latMu.Unlock()
	l := w.lat
	w.lat = nil
	return l
}

// ---- clients ----

// session is one connection of a client.
type session struct {
	start, ready time.Time
	node, lb     string // X-Notify-Node (serves it), X-Lb-Server (haproxy sent it to)
	since        string // the cursor it resumed from
	recovered    *bool  // the state frame's "recovered"

	cursorFromState string

	seqs []int32 // sequence numbers received, in order
	at   []int64 // arrival, ns since world.epoch

	closed   bool
	closedAt time.Time
	code     int // 1006: dropped without a close frame
	reason   string
	byUs     bool // the client closed it (the end of the run, a churn)
}

// dialFailure is one failed connection attempt.
type dialFailure struct {
	at  time.Time
	err string
}

type client struct {
	w    *world
	idx  int
	u    *user
	kind int
	hdr  ws.HandshakeHeader

	mu       sync.Mutex
	sessions []*session
	fails    []dialFailure
	cursor   string        // resume: the newest cursor seen
	conn     net.Conn      // the open connection, nil between sessions
	pause    chan struct{} // non-nil: reading stops until it is closed
	halt     bool          // no reconnect after the next close
	scratch  []byte        // the reader's buffer for large (bulk) frames

	wmu sync.Mutex
}

func newClient(w *world, idx int, u *user, kind int) *client {
	return &client{w: w, idx: idx, u: u, kind: kind,
		hdr: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + u.token}})}
}

func (c *client) String() string { return fmt.Sprintf("client %d (user %s)", c.idx, c.u.id) }

// current is the latest session and whether it is open.
func (c *client) current() (*session, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sessions) == 0 {
		return nil, false
	}
	s := c.sessions[len(c.sessions)-1]
	return s, !s.closed && c.conn != nil
}

// start runs the client until the world stops.
func (c *client) start() {
	c.w.wg.Add(1)
	go func() {
		defer c.w.wg.Done()
		c.run(c.w.ctx)
	}()
}

// run connects, reads, and reconnects (jittered exponential backoff after
// a failed attempt, a jittered pause after a close) until ctx ends.
func (c *client) run(ctx context.Context) {
	fails := 0
	for ctx.Err() == nil {
		s, conn, br, err := c.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.fails = append(c.fails, dialFailure{time.Now(), err.Error()})
			c.mu.Unlock()
			fails++
			d := min(100*time.Millisecond<<min(fails-1, 5), 2*time.Second)
			sleep(ctx, d/2+rand.N(d/2))
			continue
		}
		fails = 0
		c.read(s, conn, br)
		c.mu.Lock()
		halt := c.halt
		c.mu.Unlock()
		if ctx.Err() != nil || halt {
			return
		}
		// The contract: reconnect with jitter.
		sleep(ctx, 50*time.Millisecond+rand.N(450*time.Millisecond))
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (c *client) url() (u, since string) {
	switch c.kind {
	case kindResume:
		c.mu.Lock()
		since = c.cursor
		c.mu.Unlock()
		return c.w.url + "?envelope=1&since=" + neturl.QueryEscape(since), since
	case kindStopper:
		return c.w.url + "?topic=" + bulkTopic, ""
	}
	return c.w.url, ""
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
	url, since := c.url()
	s.since = since
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		Header:  c.hdr,
		NetDial: c.netDial,
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
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial: %w", err)
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.readHello(s, conn, br); err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	s.ready = time.Now()
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.conn = conn
	if c.kind == kindResume && c.cursor == "" {
		c.cursor = s.cursorFromState
	}
	c.mu.Unlock()
	return s, conn, br, nil
}

// stopperRcvBuf is the receive buffer a stopper asks for (the kernel
// doubles it): a small device's, not the 32 MiB Linux autotuning may grow
// a fast reader's to, so that a stopped reader backs up to the node within
// seconds rather than after gigabytes.
const stopperRcvBuf = 16 << 10

func (c *client) netDial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{}
	if c.kind == kindStopper {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, stopperRcvBuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return d.DialContext(ctx, network, addr)
}

func (c *client) readHello(s *session, conn net.Conn, br *bufio.Reader) error {
	for _, want := range []string{"connect", "state"} {
		op, p, err := c.readData(conn, br)
		if err != nil {
			return fmt.Errorf("reading the %s frame from %s: %w", want, s.node, err)
		}
		var f struct {
			Kind      string `json:"kind"`
			UserID    string `json:"userID"`
			Cursor    string `json:"cursor"`
			Recovered *bool  `json:"recovered"`
		}
		if op != ws.OpText || json.Unmarshal(p, &f) != nil || f.Kind != want {
			return fmt.Errorf("from %s: frame %v %q, want the %s frame", s.node, op, p, want)
		}
		if want == "connect" && f.UserID != c.u.id {
			return fmt.Errorf("from %s: connect frame for user %q", s.node, f.UserID)
		}
		if want == "state" {
			s.cursorFromState, s.recovered = f.Cursor, f.Recovered
		}
	}
	return nil
}

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
		if h.Masked || h.Length > 1<<20 {
			return 0, nil, fmt.Errorf("bad frame header %+v", h)
		}
		var p []byte
		if h.Length > 4096 {
			// A bulk frame, only counted: one buffer per client, not an
			// allocation per frame (the load generator must stay cheap).
			if int64(cap(c.scratch)) < h.Length {
				c.scratch = make([]byte, h.Length)
			}
			p = c.scratch[:h.Length]
		} else {
			p = make([]byte, h.Length)
		}
		if _, err := io.ReadFull(r, p); err != nil {
			return 0, nil, err
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			return h.OpCode, p, nil
		case ws.OpPing:
			c.write(conn, ws.NewPongFrame(p))
		case ws.OpPong:
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			c.write(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(code, "")))
			return 0, nil, errClosed{int(code), reason}
		}
	}
}

func (c *client) write(conn net.Conn, f ws.Frame) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_ = ws.WriteFrame(conn, ws.MaskFrameInPlace(f))
}

// read records a session's messages until it ends.
func (c *client) read(s *session, conn net.Conn, r *bufio.Reader) {
	code, reason := 0, ""
	for {
		c.mu.Lock()
		pause := c.pause
		c.mu.Unlock()
		if pause != nil {
			select {
			case <-pause:
			case <-c.w.ctx.Done():
			}
		}
		op, p, err := c.readData(conn, r)
		if err != nil {
			var ce errClosed
			if errors.As(err, &ce) {
				code, reason = ce.code, ce.reason
			} else {
				code, reason = 1006, err.Error()
			}
			break
		}
		now := time.Now()
		if len(p) > 0 && p[0] == 'B' {
			c.w.bulkBytes.Add(int64(len(p)))
			continue
		}
		payload := p
		cursor := ""
		if c.kind == kindResume {
			var e struct {
				Kind   string `json:"kind"`
				Cursor string `json:"cursor"`
				Data   string `json:"data"`
			}
			if op != ws.OpText || json.Unmarshal(p, &e) != nil || e.Kind != "message" {
				continue
			}
			payload, cursor = []byte(e.Data), e.Cursor
		}
		seqB, tsB, ok := bytes.Cut(payload, []byte{':'})
		seq, err1 := strconv.Atoi(string(seqB))
		ts, err2 := strconv.ParseInt(string(tsB), 10, 64)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		c.mu.Lock()
		s.seqs = append(s.seqs, int32(seq))
		s.at = append(s.at, c.w.since(now))
		if cursor != "" {
			c.cursor = cursor
		}
		c.mu.Unlock()
		if c.kind != kindStopper && c.w.latOn.Load() {
			us := int32(now.Sub(time.Unix(0, ts)) / time.Microsecond)
			c.w.latMu.Lock()
			c.w.lat = append(c.w.lat, us)
			c.w.latMu.Unlock()
		}
	}
	conn.Close()
	c.mu.Lock()
	s.closed, s.closedAt, s.code, s.reason = true, time.Now(), code, reason
	s.byUs = c.w.ctx.Err() != nil
	c.conn = nil
	c.mu.Unlock()
}

// hangUp closes the client's connection (the world is stopping).
func (c *client) hangUp() {
	c.mu.Lock()
	conn := c.conn
	if c.pause != nil {
		close(c.pause)
		c.pause = nil
	}
	c.mu.Unlock()
	if conn != nil {
		c.write(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
		conn.Close()
	}
}

// stopReading makes the client stop reading its socket (it stays open);
// resumeReading lets it read again, and halt keeps it from reconnecting.
// Meanwhile it sends a ping every 5 s, as a client whose reader is stuck
// but whose application is alive would send its heartbeats: the node's
// idle timeout (no frame for two ping intervals) is then not what ends
// it; only the slow-consumer cut can.
func (c *client) stopReading() {
	c.mu.Lock()
	if c.pause == nil {
		c.pause = make(chan struct{})
		pause := c.pause
		go func() {
			tk := time.NewTicker(5 * time.Second)
			defer tk.Stop()
			for {
				select {
				case <-pause:
					return
				case <-c.w.ctx.Done():
					return
				case <-tk.C:
				}
				c.mu.Lock()
				conn := c.conn
				c.mu.Unlock()
				if conn != nil {
					c.write(conn, ws.NewPingFrame([]byte("hb")))
				}
			}
		}()
	}
	c.halt = true
	c.mu.Unlock()
}

func (c *client) resumeReading() {
	c.mu.Lock()
	if c.pause != nil {
		close(c.pause)
		c.pause = nil
	}
	c.mu.Unlock()
}

// snapshot copies the client's sessions.
func (c *client) snapshot() []session {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]session, len(c.sessions))
	for i, s := range c.sessions {
		out[i] = *s
		out[i].seqs = slices.Clone(s.seqs)
		out[i].at = slices.Clone(s.at)
	}
	return out
}

func (c *client) failsSince(t time.Time) []dialFailure {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []dialFailure
	for _, f := range c.fails {
		if !f.at.Before(t) {
			out = append(out, f)
		}
	}
	return out
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Client mode: this process holds many WebSocket connections and answers
// commands (JSON lines) from the driver on stdin.

type command struct {
	Cmd         string   `json:"cmd"`
	URL         string   `json:"url,omitempty"`
	Src         string   `json:"src,omitempty"`
	First       int      `json:"first,omitempty"`
	Count       int      `json:"count,omitempty"`
	Users       []string `json:"users,omitempty"` // instead of First/Count
	Proto       string   `json:"proto,omitempty"` // "" (/notify/ws), "phoenix" or "sse"
	Topics      []string `json:"topics,omitempty"`
	Secret      string   `json:"secret,omitempty"`
	Concurrency int      `json:"concurrency,omitempty"`
	// /notify/ws only: ?envelope=1; with Users, the cursor each one resumes
	// from (?since=, "" for none), and the message frames each connection
	// reads after the connect and state frames, as part of its handshake.
	// A connection given a cursor also checks that its state frame says
	// "recovered":true.
	Envelope bool     `json:"envelope,omitempty"`
	Since    []string `json:"since,omitempty"`
	Expect   int      `json:"expect,omitempty"`
	// The token kind "sign" makes (and "connect" makes without Signed):
	// "" (HS256 with Secret, auth.Sign), "rs256" (Key, a PKCS#8 RSA key,
	// and Kid) or "phoenix" (a Phoenix.Token made with KeyBase).
	Token   string `json:"token,omitempty"`
	Key     []byte `json:"key,omitempty"`
	Kid     string `json:"kid,omitempty"`
	KeyBase string `json:"key_base,omitempty"`
	// Signed: connect with the users and tokens of the last "sign"
	// command, so that the handshakes' time leaves signing out.
	Signed bool `json:"signed,omitempty"`
	// QueryToken: the token goes in ?token= (as phoenix.js sends it), not
	// in an Authorization header.
	QueryToken bool `json:"query_token,omitempty"`
}

// query is the query string of connection i of c.
func (c command) query(i int) string {
	var q []string
	if len(c.Topics) > 0 {
		q = append(q, "topic="+strings.Join(c.Topics, ","))
	}
	if c.Envelope {
		q = append(q, "envelope=1")
	}
	if i < len(c.Since) && c.Since[i] != "" {
		q = append(q, "since="+url.QueryEscape(c.Since[i]))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + strings.Join(q, "&")
}

// resumes reports whether connection i of c is given a cursor.
func (c command) resumes(i int) bool { return i < len(c.Since) && c.Since[i] != "" }

type reply struct {
	OK        bool     `json:"ok"`
	Err       string   `json:"err,omitempty"`
	Connected int      `json:"connected,omitempty"`
	Failed    int      `json:"failed,omitempty"`
	Seconds   float64  `json:"seconds,omitempty"`
	Received  int64    `json:"received,omitempty"`
	Hist      []uint64 `json:"hist,omitempty"`
	Closed    int64    `json:"closed,omitempty"`
}

// Latency histogram: 10 µs buckets up to 1 s, then one overflow bucket.
const (
	histBucket = 10 * time.Microsecond
	histSize   = 100001
)

// readBufferSize is each client connection's read buffer: the frames the
// bench sends are small, a larger one is read past it.
const readBufferSize = 1024

type clientProc struct {
	mu       sync.Mutex
	conns    []net.Conn
	signed   signedTokens // of the last "sign" command
	received atomic.Int64
	closed   atomic.Int64
	hist     []atomic.Uint64
}

func runClient() {
	cp := &clientProc{hist: make([]atomic.Uint64, histSize)}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c command
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			_ = out.Encode(reply{Err: err.Error()})
			continue
		}
		switch c.Cmd {
		case "connect":
			_ = out.Encode(cp.connect(c))
		case "sign":
			var err error
			if cp.signed, err = sign(c); err != nil {
				_ = out.Encode(reply{Err: err.Error()})
				continue
			}
			_ = out.Encode(reply{OK: true})
		case "reset":
			cp.received.Store(0)
			cp.closed.Store(0)
			for i := range cp.hist {
				cp.hist[i].Store(0)
			}
			_ = out.Encode(reply{OK: true})
		case "report":
			r := reply{OK: true, Received: cp.received.Load(), Closed: cp.closed.Load(), Hist: make([]uint64, histSize)}
			for i := range cp.hist {
				r.Hist[i] = cp.hist[i].Load()
			}
			_ = out.Encode(r)
		case "close":
			cp.mu.Lock()
			for _, nc := range cp.conns {
				nc.Close()
			}
			cp.conns = nil
			cp.mu.Unlock()
			_ = out.Encode(reply{OK: true})
		case "quit":
			return
		}
	}
}

func (cp *clientProc) connect(c command) reply {
	st := cp.signed
	if c.Signed {
		cp.signed = signedTokens{}
	} else {
		var err error
		if st, err = sign(c); err != nil {
			return reply{Err: err.Error()}
		}
	}
	if c.Proto == "sse" {
		return cp.dialAll(c, st.tokens, func(_ int, tok string) (net.Conn, *bufio.Reader, error) {
			return dialSSE(c, tok)
		}, cp.readSSE)
	}
	dialer := ws.Dialer{
		Timeout: 10 * time.Second,
		// The reader the dialer returns (it holds the frames that came
		// with the 101) reads the connection from then on: one small
		// buffer a connection, not the dialer's 4 KiB one and another.
		ReadBufferSize: readBufferSize,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.Src)}, Control: bindNoPort}
			return d.DialContext(ctx, network, addr)
		},
	}
	return cp.dialAll(c, st.tokens, func(i int, tok string) (net.Conn, *bufio.Reader, error) {
		d := dialer
		u := c.URL + c.query(i)
		if c.QueryToken {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + "token=" + url.QueryEscape(tok)
		} else {
			d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})
		}
		nc, br, _, err := d.Dial(context.Background(), u)
		if err != nil {
			return nil, nil, err
		}
		// Frames may already sit in the dialer's reader; it reads nc.
		r := br
		if r == nil {
			r = bufio.NewReaderSize(nc, readBufferSize)
		}
		if c.Proto == "phoenix" {
			err = phoenixJoin(nc, r, st.users[i])
		} else {
			err = expectHandshake(nc, r, c.Expect, c.resumes(i))
		}
		return nc, r, err
	}, cp.read)
}

// dialAll opens one connection a token, c.Concurrency at a time, keeps
// those that dial (a conn returned with an error is closed) and reads each
// from a goroutine of its own until it closes.
//
// c.Concurrency goroutines dial, each one connection after another: a
// goroutine's stack grows to a handshake's depth by copying itself, once
// for the run, not once a connection (8 % of the load generator's CPU in a
// ramp). A reader's stack stays small.
func (cp *clientProc) dialAll(c command, tokens []string, dial func(i int, tok string) (net.Conn, *bufio.Reader, error), read func(net.Conn, *bufio.Reader)) reply {
	var connected, failed atomic.Int64
	var firstErr atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(max(c.Concurrency, 1), len(tokens)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tokens) {
					return
				}
				nc, r, err := dial(i, tokens[i])
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					if nc != nil {
						nc.Close()
					}
					continue
				}
				cp.mu.Lock()
				cp.conns = append(cp.conns, nc)
				cp.mu.Unlock()
				connected.Add(1)
				go read(nc, r)
			}
		}()
	}
	wg.Wait()
	rep := reply{OK: true, Connected: int(connected.Load()), Failed: int(failed.Load()), Seconds: time.Since(start).Seconds()}
	if e, ok := firstErr.Load().(string); ok {
		rep.Err = e
	}
	return rep
}

// phoenixJoin joins user:<user> (the token's user) and expects the
// phx_reply ok.
func phoenixJoin(nc net.Conn, r *bufio.Reader, user string) error {
	msg := fmt.Sprintf(`["1","1","user:%s","phx_join",{}]`, user)
	if err := ws.WriteFrame(nc, ws.MaskFrameInPlace(ws.NewTextFrame([]byte(msg)))); err != nil {
		return err
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	h, err := ws.ReadHeader(r)
	if err != nil {
		return fmt.Errorf("join reply: %w", err)
	}
	if h.Length > 4096 {
		return fmt.Errorf("join reply: a %d-byte frame", h.Length)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return fmt.Errorf("join reply: %w", err)
	}
	if !strings.Contains(string(p), `"phx_reply"`) || !strings.Contains(string(p), `"status":"ok"`) {
		return fmt.Errorf("join reply: %s", p)
	}
	return nil
}

// dialSSE opens an event stream (GET /notify/sse) and reads up to the
// retry, connect and state events.
func dialSSE(c command, tok string) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.Src)}, Control: bindNoPort, Timeout: 10 * time.Second}
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, nil, err
	}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, nil, err
	}
	if _, err := fmt.Fprintf(nc, "GET %s?authorization=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", u.Path, tok, u.Host); err != nil {
		return nc, nil, err
	}
	r := bufio.NewReaderSize(nc, readBufferSize)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	// Headers, then the retry, connect and state events.
	for blank := 0; blank < 4; {
		line, err := r.ReadString('\n')
		if err != nil {
			return nc, nil, err
		}
		if line == "\r\n" || line == "\n" {
			blank++
		}
	}
	return nc, r, nil
}

// readSSE reads an event stream until it closes.
func (cp *clientProc) readSSE(_ net.Conn, r *bufio.Reader) {
	defer cp.closed.Add(1)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
	}
}

// expectHandshake reads the connect and state frames, then expect more
// (a replay); with resumed, the state frame must say "recovered":true.
func expectHandshake(nc net.Conn, r *bufio.Reader, expect int, resumed bool) error {
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	for i := 0; i < 2+expect; i++ {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return fmt.Errorf("frame %d: %w", i+1, err)
		}
		if i >= 2 && h.OpCode != ws.OpText {
			return fmt.Errorf("frame %d: opcode %d, want a text frame", i+1, h.OpCode)
		}
		if i != 1 || !resumed {
			if _, err := io.CopyN(io.Discard, r, h.Length); err != nil {
				return err
			}
			continue
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			return err
		}
		if !strings.Contains(string(p), `"recovered":true`) {
			return fmt.Errorf("state frame does not say recovered: %s", p)
		}
	}
	return nil
}

// read counts data frames, records the latency of those carrying a send
// timestamp, and answers pings. It looks at frames in r's buffer (a ping's
// payload is at most 125 bytes; a timestamp is the first 19) and skips
// the rest, so a connection holds no buffer of its own.
func (cp *clientProc) read(nc net.Conn, r *bufio.Reader) {
	defer cp.closed.Add(1)
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return
		}
		switch h.OpCode {
		case ws.OpPing:
			p, err := r.Peek(int(h.Length))
			if err != nil {
				return
			}
			f := ws.MaskFrameInPlace(ws.NewPongFrame(append([]byte(nil), p...)))
			if err := ws.WriteFrame(nc, f); err != nil {
				return
			}
		case ws.OpClose:
			return
		case ws.OpText, ws.OpBinary:
			cp.received.Add(1)
			if h.Length >= 19 {
				p, err := r.Peek(19)
				if err != nil {
					return
				}
				if ts, err := strconv.ParseInt(string(p), 10, 64); err == nil {
					d := time.Since(time.Unix(0, ts))
					i := min(int(d/histBucket), histSize-1)
					if i < 0 {
						i = 0
					}
					cp.hist[i].Add(1)
				}
			}
		}
		if _, err := r.Discard(int(h.Length)); err != nil {
			return
		}
	}
}

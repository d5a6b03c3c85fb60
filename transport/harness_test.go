package transport

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// recorder is a Handler that records what happened.
type recorder struct {
	closes chan closeEvent
	msgs   chan message
}

type closeEvent struct {
	c    *Conn
	info CloseInfo
}

type message struct {
	text    bool
	payload string
}

func newRecorder() *recorder {
	return &recorder{closes: make(chan closeEvent, 4096), msgs: make(chan message, 4096)}
}

func (r *recorder) OnMessage(c *Conn, text bool, p []byte) {
	r.msgs <- message{text, string(p)}
}

func (r *recorder) OnClose(c *Conn, info CloseInfo) { r.closes <- closeEvent{c, info} }

func (r *recorder) waitClose(t testing.TB) closeEvent {
	t.Helper()
	select {
	case ev := <-r.closes:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose within 10s")
	}
	return closeEvent{}
}

// testServer is a transport Server behind a real HTTP listener.
type testServer struct {
	srv   *Server
	rec   *recorder
	http  *httptest.Server
	conns chan *Conn
	addr  string
}

// serverOpts tune the per-connection setup of a test server.
type serverOpts struct {
	conn   func(r *http.Request) ConnOptions
	first  func(c *Conn) [][]byte
	held   func(c *Conn) // runs between NewConn and Attach
	header http.Header   // of the 101 response
}

func startServer(t testing.TB, cfg Config, so serverOpts) *testServer {
	t.Helper()
	ts := &testServer{rec: newRecorder(), conns: make(chan *Conn, 4096)}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	ts.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := CheckUpgrade(r); err != nil {
			ue, _ := IsUpgradeError(err)
			http.Error(w, ue.Msg, ue.Status)
			return
		}
		var o ConnOptions
		if so.conn != nil {
			o = so.conn(r)
		}
		if o.Handler == nil {
			o.Handler = ts.rec
		}
		c := srv.NewConn(o)
		if so.held != nil {
			so.held(c)
		}
		nc, buffered, response, err := Upgrade(w, r, so.header)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		var first [][]byte
		if so.first != nil {
			first = so.first(c)
		}
		if err := srv.Attach(c, nc, buffered, response, first...); err != nil {
			t.Errorf("attach: %v", err)
			return
		}
		ts.conns <- c
	}))
	ts.addr = strings.TrimPrefix(ts.http.URL, "http://")
	t.Cleanup(func() {
		ts.http.Close()
		srv.Close()
	})
	return ts
}

func (ts *testServer) url() string { return "ws://" + ts.addr + "/" }

func (ts *testServer) nextConn(t testing.TB) *Conn {
	t.Helper()
	select {
	case c := <-ts.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection attached within 10s")
	}
	return nil
}

// rawClient speaks WebSocket byte by byte so tests can send what a real
// client never would.
type rawClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string, extra []byte) *rawClient {
	t.Helper()
	rc, _ := dialRawHeader(t, addr, "", extra)
	return rc
}

// dialRawHeader is dialRaw with more request header lines (each ending in
// CRLF); it also returns the server's response.
func dialRawHeader(t testing.TB, addr, header string, extra []byte) (*rawClient, *http.Response) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	// extra goes in the same write as the handshake: the server must not lose
	// bytes it read ahead.
	if _, err := nc.Write(append([]byte(handshakeRequest(addr, header)), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake status %d", resp.StatusCode)
	}
	return &rawClient{t: t, nc: nc, br: br}, resp
}

// handshakeRequest is a client's WebSocket handshake for path /.
func handshakeRequest(addr, header string) string {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	return "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n"
}

// clientFrame builds a client frame; masked=false or rsv!=0 make it invalid.
func clientFrame(fin bool, rsv, op byte, masked bool, payload []byte) []byte {
	b0 := op | rsv<<4
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		f = append(f, mbit|byte(n))
	case n <= 0xFFFF:
		f = append(f, mbit|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mbit|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if masked {
		mask := [4]byte{0x12, 0x34, 0x56, 0x78}
		f = append(f, mask[:]...)
		ws.Cipher(p, mask, 0)
	}
	return append(f, p...)
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	if _, err := rc.nc.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read returns the next server frame.
func (rc *rawClient) read() ws.Frame {
	rc.t.Helper()
	_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := readFrame(rc.br)
	if err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	if f.Header.Masked {
		rc.t.Fatal("server frame is masked")
	}
	return f
}

// maxTestFrame bounds the payload a test client reads (the largest a test
// sends is 1 MiB).
const maxTestFrame = 8 << 20

// readFrame reads one frame, refusing a declared length over maxTestFrame
// (ws.ReadFrame would allocate whatever the peer declares).
func readFrame(r io.Reader) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > maxTestFrame {
		return ws.Frame{}, fmt.Errorf("frame of %d bytes: over the test limit", h.Length)
	}
	f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return ws.Frame{}, err
	}
	return f, nil
}

// expectClose reads until a close frame and checks its code.
func (rc *rawClient) expectClose(code int) string {
	rc.t.Helper()
	for {
		f := rc.read()
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		if code == 0 {
			if len(f.Payload) != 0 {
				rc.t.Fatalf("close payload %q, want empty", f.Payload)
			}
			return ""
		}
		if len(f.Payload) < 2 {
			rc.t.Fatalf("close frame without code, want %d", code)
		}
		got := int(binary.BigEndian.Uint16(f.Payload))
		if got != code {
			rc.t.Fatalf("close code %d (%q), want %d", got, f.Payload[2:], code)
		}
		return string(f.Payload[2:])
	}
}

// expectEOF checks that the server closes the TCP connection.
func (rc *rawClient) expectEOF() {
	rc.t.Helper()
	_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := rc.br.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				rc.t.Fatal("server did not close the connection")
			}
			return
		}
	}
}

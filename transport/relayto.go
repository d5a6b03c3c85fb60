package transport

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// RelayOptions describe relaying a client's handshake to the server that should serve it.
type RelayOptions struct {
	Addr             string        // host:port of that server
	Header           http.Header   // set on the replayed request, replacing the client's values of these names
	DialTimeout      time.Duration // zero: 500ms
	HandshakeTimeout time.Duration // zero: 3s, for the other server's response head
	OnClose          func()        // after a nil return: runs once, on an event loop, when the relay has ended (possibly before RelayTo returns)
	// PassOn names the refusals of the other server the client must get as
	// they are (a limit only that server can enforce, say) instead of the
	// caller serving the request itself; nil: none.
	PassOn func(status int) bool
}

// ErrPassedOn is wrapped by RelayTo's error when the other server refused
// the request with a status PassOn named: its answer went to the client,
// and the request is finished.
var ErrPassedOn = errors.New("transport: the other server's refusal was passed on")

// maxPassedBody bounds the body of a refusal passed on to the client.
const maxPassedBody = 64 << 10

// ErrNotRelayed is wrapped by RelayTo's errors when nothing was written to the client: the caller may serve the request itself.
var ErrNotRelayed = errors.New("transport: not relayed")

const (
	defaultRelayDialTimeout      = 500 * time.Millisecond
	defaultRelayHandshakeTimeout = 3 * time.Second
	relayReadBufferSize          = 4096
)

// RelayTo replays the client's handshake r (a GET: a WebSocket upgrade or an
// event stream) to the server at o.Addr. When that server accepts it (101
// Switching Protocols, or 200 with Content-Type text/event-stream), RelayTo
// hijacks w, passes that server's response on to the client and joins the
// two connections with Relay.
//
// An error wrapping ErrNotRelayed says why the other server did not take the
// request (unreachable, a refusal, no answer in time); nothing was written to
// w. Any other error came after that server accepted: the request is
// finished, the client's connection closed, and o.OnClose does not run.
func (s *Server) RelayTo(w http.ResponseWriter, r *http.Request, o RelayOptions) error {
	up, br, resp, err := replayHandshake(r, o)
	var refused *refusal
	if errors.As(err, &refused) && o.PassOn != nil && o.PassOn(refused.resp.StatusCode) {
		passOn(w, refused)
		return fmt.Errorf("relay to %s: %w (%d)", o.Addr, ErrPassedOn, refused.resp.StatusCode)
	}
	if refused != nil {
		refused.close()
	}
	if err != nil {
		return err
	}
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return fmt.Errorf("relay to %s: hijack: %w", o.Addr, err)
	}
	_ = up.SetDeadline(time.Time{})
	_ = nc.SetDeadline(time.Time{})
	// The other server's response head (with its Sec-WebSocket-Accept) and
	// whatever it sent after it go to the client first; what the client sent
	// ahead goes to the other server.
	toClient := responseHead(resp, readAhead(br))
	if err := s.Relay(nc, readAhead(rw.Reader), up, toClient, o.OnClose); err != nil {
		return fmt.Errorf("relay to %s: %w", o.Addr, err)
	}
	return nil
}

// replayHandshake dials o.Addr, sends it r and reads its response head. It
// returns the connection and the reader holding what came after the head,
// or an error wrapping ErrNotRelayed.
func replayHandshake(r *http.Request, o RelayOptions) (net.Conn, *bufio.Reader, *http.Response, error) {
	if o.Addr == "" {
		return nil, nil, nil, fmt.Errorf("%w: no address", ErrNotRelayed)
	}
	d := net.Dialer{Timeout: cmp.Or(o.DialTimeout, defaultRelayDialTimeout)}
	up, err := d.DialContext(r.Context(), "tcp", o.Addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w to %s: dial: %w", ErrNotRelayed, o.Addr, err)
	}
	_ = up.SetDeadline(time.Now().Add(cmp.Or(o.HandshakeTimeout, defaultRelayHandshakeTimeout)))
	if _, err := up.Write(replayedRequest(r, o.Header)); err != nil {
		up.Close()
		return nil, nil, nil, fmt.Errorf("%w to %s: send handshake: %w", ErrNotRelayed, o.Addr, err)
	}
	br := bufio.NewReaderSize(up, relayReadBufferSize)
	resp, err := http.ReadResponse(br, r)
	if err != nil {
		up.Close()
		return nil, nil, nil, fmt.Errorf("%w to %s: read response: %w", ErrNotRelayed, o.Addr, err)
	}
	if !relayAccepted(resp) {
		return nil, nil, nil, &refusal{up: up, resp: resp, err: fmt.Errorf("%w to %s: it answered %d", ErrNotRelayed, o.Addr, resp.StatusCode)}
	}
	return up, br, resp, nil
}

// refusal is the other server's answer that did not accept the request;
// its connection stays open until the answer is passed on or dropped.
type refusal struct {
	up   net.Conn
	resp *http.Response
	err  error
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }
func (e *refusal) close()        { e.up.Close() }

// passOn writes the other server's refusal to the client: its status, the
// headers a client acts on, and its body (bounded).
func passOn(w http.ResponseWriter, e *refusal) {
	defer e.close()
	body, _ := io.ReadAll(io.LimitReader(e.resp.Body, maxPassedBody))
	for _, k := range []string{"Content-Type", "Retry-After", "X-Notify-Node"} {
		if v := e.resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(e.resp.StatusCode)
	_, _ = w.Write(body)
}

// relayAccepted: a WebSocket switches protocols; an event stream answers 200
// and streams (its body runs until the connection ends).
func relayAccepted(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusSwitchingProtocols:
		return true
	case http.StatusOK:
		return strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	}
	return false
}

// replayedRequest is the client's handshake as the other server must see it:
// the client's headers in sorted order except those named in replace, then
// replace's, and X-Forwarded-For from the client's address unless either
// has one.
func replayedRequest(r *http.Request, replace http.Header) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", r.URL.RequestURI(), r.Host)
	writeHeaderLines(&b, r.Header, replace)
	writeHeaderLines(&b, replace, nil)
	if !hasField(r.Header, "X-Forwarded-For") && !hasField(replace, "X-Forwarded-For") {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			fmt.Fprintf(&b, "X-Forwarded-For: %s\r\n", host)
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// writeHeaderLines writes h's fields in sorted order, leaving out the names
// that skip has.
func writeHeaderLines(b *bytes.Buffer, h, skip http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		if !hasField(skip, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(b, "%s: %s\r\n", k, v)
		}
	}
}

// hasField reports whether h names the field name, whatever the case of
// either (a caller's literal http.Header may not be canonical).
func hasField(h http.Header, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// responseHead is the other server's response head as the client must see
// it, followed by rest. http.ReadResponse moves Transfer-Encoding out of the
// header; it goes back in, since the body bytes are passed on as they came.
func responseHead(resp *http.Response, rest []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %s\r\n", resp.Status)
	if len(resp.TransferEncoding) > 0 {
		fmt.Fprintf(&b, "Transfer-Encoding: %s\r\n", strings.Join(resp.TransferEncoding, ", "))
	}
	_ = resp.Header.Write(&b)
	b.WriteString("\r\n")
	b.Write(rest)
	return b.Bytes()
}

// readAhead returns a copy of the bytes br has read but not handed out.
func readAhead(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n) // never fails for n <= Buffered
	return bytes.Clone(b)
}

package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/transport"
)

// Phoenix long-poll (the fallback phoenix.js takes when WebSockets are
// blocked): GET without a session token opens a session ({"status":410,
// "token":...}), GET with it polls (held up to lpHold, then 200 with
// messages or 204), POST with it sends messages (ndjson). A session lives
// on the owner of its user; a request that lands elsewhere is proxied
// there, so it works behind a round-robin balancer.
//
// Cost: a session is its socket state and its outbox; a poll is held by a
// net/http goroutine while it waits (a proxied one by one goroutine on each
// node). An idle WebSocket or SSE client has no goroutine; a long-poll client
// has one per poll in flight.

const (
	lpHold     = 10 * time.Second // default poll hold: under phoenix.js's 20 s request timeout
	lpIdle     = 25 * time.Second // default: no poll for this long ends the session
	lpMaxBody  = 1 << 20
	lpMaxLines = 100 // phoenix.js batches at most 100 messages per POST
)

// lpSession is one long-poll client.
type lpSession struct {
	n     *Node
	token string
	cl    *client

	mu       sync.Mutex
	out      [][]byte // Phoenix messages for the next poll
	outBytes int
	polls    int
	lastPoll time.Time
	cut      bool // ending: takes nothing more
	ended    bool
	code     int           // why it ended (a close code, for metrics)
	wake     chan struct{} // size 1: messages arrived
	done     chan struct{} // closed when the session ends
}

var _ phxOut = (*lpSession)(nil)

// send queues a message for the next poll. It runs under hub and socket
// locks (delivery), so ending the session, which leaves the hub, happens on
// another goroutine.
func (s *lpSession) send(f phxFrame, _ bool) bool {
	s.mu.Lock()
	if s.ended || s.cut {
		s.mu.Unlock()
		return false
	}
	if s.outBytes+len(f.text) > s.n.cfg.SendQueueBytes {
		s.cut = true
		s.mu.Unlock()
		go s.n.endSession(s, transport.CloseSlowConsumer)
		return false
	}
	s.out = append(s.out, f.text)
	s.outBytes += len(f.text)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// close ends the session; like send it may run under hub locks.
func (s *lpSession) close(code int, _ string) {
	s.mu.Lock()
	s.cut = true
	s.mu.Unlock()
	go s.n.endSession(s, code)
}

// take returns the queued messages.
func (s *lpSession) take() [][]byte {
	out := s.out
	s.out, s.outBytes = nil, 0
	return out
}

// longPollTokens: the user's token is X-Phoenix-AuthToken or the first token
// query parameter; the session token is the last token parameter, which
// phoenix.js appends after its own params once it has one.
func longPollTokens(r *http.Request, cookie string) (user, session string) {
	q := r.URL.Query()["token"]
	if h := r.Header.Get("X-Phoenix-AuthToken"); h != "" {
		if len(q) > 0 {
			session = q[len(q)-1]
		}
		return h, session
	}
	switch len(q) {
	case 0:
		user, _ = auth.TokenFromRequest(r, cookie)
		return user, ""
	case 1:
		return q[0], ""
	}
	return q[0], q[len(q)-1]
}

type lpStatus struct {
	Status   int      `json:"status"`
	Token    string   `json:"token,omitempty"`
	Messages []string `json:"messages,omitempty"`
}

// Statuses go in the body, as Phoenix sends them; the HTTP status is 200
// except for a refusal of a new session while draining, which phoenix.js
// treats as a failed request and retries (elsewhere, through the balancer).
func writeLP(w http.ResponseWriter, st lpStatus) { writeJSON(w, http.StatusOK, st) }

// serveLongPoll is GET and POST /pubsub/longpoll.
func (n *Node) serveLongPoll(w http.ResponseWriter, r *http.Request) {
	vsn1, ok := n.phoenixVsn(w, r)
	if !ok {
		return
	}
	userTok, sessTok := longPollTokens(r, n.cfg.Auth.SessionCookie)
	claims, err := n.verifier.Verify(userTok)
	if err != nil {
		n.metrics.rejected.WithLabelValues(rejectUnauthorized).Inc()
		if s := n.session(sessTok, ""); s != nil {
			n.endSession(s, transport.CloseTokenExpired)
		}
		writeLP(w, lpStatus{Status: http.StatusForbidden})
		return
	}
	if r.Header.Get(forwardedByHeader) == "" {
		if owner, addr := n.ownerOf(claims.UserID); owner != "" && n.proxyLongPoll(w, r, owner, addr) {
			return
		}
	}
	switch {
	case sessTok == "" && r.Method == http.MethodGet:
		n.openSession(w, r, claims, vsn1)
	case sessTok == "":
		writeLP(w, lpStatus{Status: http.StatusBadRequest})
	default:
		s := n.session(sessTok, claims.UserID)
		if s == nil {
			// Unknown, ended, or another user's: gone. phoenix.js then opens
			// a new session and rejoins its channels.
			writeLP(w, lpStatus{Status: http.StatusGone})
			return
		}
		if r.Method == http.MethodGet {
			n.poll(w, r, s)
		} else {
			n.post(w, r, s, vsn1)
		}
	}
}

// session finds an open session; user, when given, must be its user (a
// token of another user's session counts as unknown).
func (n *Node) session(token, user string) *lpSession {
	if token == "" {
		return nil
	}
	n.lpMu.Lock()
	s := n.lpSessions[token]
	n.lpMu.Unlock()
	if s == nil || (user != "" && s.cl.user != user) {
		if s != nil {
			n.log.Warn("long-poll session token used by another user", "session_user", s.cl.user, "user", user)
		}
		return nil
	}
	return s
}

func (n *Node) openSession(w http.ResponseWriter, r *http.Request, claims auth.Claims, vsn1 bool) {
	if n.draining.Load() {
		n.refuse(w, http.StatusServiceUnavailable, rejectDraining, "node is draining, reconnect to another node")
		return
	}
	if !n.originAllowed(r) {
		n.metrics.rejected.WithLabelValues(rejectOrigin).Inc()
		writeLP(w, lpStatus{Status: http.StatusForbidden})
		return
	}
	var b [18]byte
	_, _ = rand.Read(b[:])
	s := &lpSession{n: n, token: base64.RawURLEncoding.EncodeToString(b[:]), lastPoll: time.Now(),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.cl = &client{user: claims.UserID, kind: kindLongPoll, via: strings.Clone(r.Header.Get(forwardedByHeader))}
	s.cl.phx = newPhxSocket(n, s.cl, vsn1, claims, s)
	n.lpMu.Lock()
	n.lpSessions[s.token] = s
	n.lpMu.Unlock()
	n.registerPhoenix(s.cl.phx)
	m := n.metrics.transport(kindLongPoll)
	m.connections.Inc()
	m.accepted.Inc()
	w.Header().Set("X-Notify-Node", n.cfg.NodeName)
	writeLP(w, lpStatus{Status: http.StatusGone, Token: s.token})
}

// poll answers at once when messages wait, else holds the request until
// some arrive, lpHold passes, the client goes or the session ends.
func (n *Node) poll(w http.ResponseWriter, r *http.Request, s *lpSession) {
	s.mu.Lock()
	s.polls++
	s.lastPoll = time.Now()
	msgs := s.take()
	s.mu.Unlock()
	if len(msgs) == 0 {
		t := time.NewTimer(n.lpHold())
		select {
		case <-s.wake:
		case <-t.C:
		case <-s.done:
		case <-r.Context().Done():
		}
		t.Stop()
		s.mu.Lock()
		msgs = s.take()
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.polls--
	s.lastPoll = time.Now()
	ended := s.ended
	s.mu.Unlock()
	switch {
	case len(msgs) > 0:
		out := make([]string, len(msgs))
		for i, m := range msgs {
			out[i] = string(m)
		}
		writeLP(w, lpStatus{Status: http.StatusOK, Token: s.token, Messages: out})
	case ended:
		writeLP(w, lpStatus{Status: http.StatusGone})
	default:
		writeLP(w, lpStatus{Status: http.StatusNoContent, Token: s.token})
	}
}

// post runs the messages of a POST, one per line (phoenix.js sends
// application/x-ndjson batches).
func (n *Node) post(w http.ResponseWriter, r *http.Request, s *lpSession, vsn1 bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, lpMaxBody))
	if err != nil {
		writeLP(w, lpStatus{Status: http.StatusRequestEntityTooLarge})
		return
	}
	var msgs []phxMessage
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 4096), lpMaxBody)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if len(line) > n.cfg.MaxMessageSize || len(msgs) == lpMaxLines {
			n.endSession(s, transport.CloseTooBig)
			writeLP(w, lpStatus{Status: http.StatusRequestEntityTooLarge})
			return
		}
		m, err := decodePhoenix(vsn1, line)
		if err != nil {
			// No ref to reply to: end the session, as the WebSocket closes.
			n.endSession(s, transport.CloseInvalidPayload)
			writeLP(w, lpStatus{Status: http.StatusBadRequest})
			return
		}
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		s.cl.phx.handle(m)
	}
	writeLP(w, lpStatus{Status: http.StatusOK})
}

// endSession ends a long-poll session: it leaves the hub, and its next
// request gets 410 so that phoenix.js reconnects.
func (n *Node) endSession(s *lpSession, code int) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.code = true, code
	s.out, s.outBytes = nil, 0
	close(s.done)
	s.mu.Unlock()
	n.lpMu.Lock()
	delete(n.lpSessions, s.token)
	n.lpMu.Unlock()
	n.forget(s.cl)
	n.metrics.transport(kindLongPoll).connections.Dec()
	n.metrics.disconnect(code)
}

func (n *Node) lpHold() time.Duration {
	if n.cfg.LongPollHold > 0 {
		return n.cfg.LongPollHold
	}
	return lpHold
}

func (n *Node) lpIdle() time.Duration {
	if n.cfg.LongPollIdle > 0 {
		return n.cfg.LongPollIdle
	}
	return lpIdle
}

// reapSessions ends sessions nobody polls any more.
func (n *Node) reapSessions(ctx context.Context) {
	t := time.NewTicker(min(time.Second, n.lpIdle()/4))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.lpMu.Lock()
			var idle []*lpSession
			for _, s := range n.lpSessions {
				s.mu.Lock()
				if s.polls == 0 && now.Sub(s.lastPoll) > n.lpIdle() {
					idle = append(idle, s)
				}
				s.mu.Unlock()
			}
			n.lpMu.Unlock()
			for _, s := range idle {
				n.endSession(s, transport.CloseGoingAway)
			}
		}
	}
}

// proxyLongPoll passes a long-poll request to the user's owner, where its
// session lives. false (nothing written) when the owner cannot be reached:
// the caller serves it here.
func (n *Node) proxyLongPoll(w http.ResponseWriter, r *http.Request, owner, addr string) bool {
	if addr == "" {
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, lpMaxBody))
	if err != nil {
		writeLP(w, lpStatus{Status: http.StatusRequestEntityTooLarge})
		return true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	failed := false
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: addr})
			pr.Out.Header.Set(forwardedByHeader, n.cfg.NodeName)
			pr.SetXForwarded()
		},
		Transport: n.lpTransport,
		ErrorHandler: func(http.ResponseWriter, *http.Request, error) {
			failed = true
		},
	}
	rp.ServeHTTP(w, r)
	if failed {
		n.metrics.forwardErrors.Inc()
		n.log.Warn("cannot proxy a long-poll request to the owner; serving locally", "owner", owner, "addr", addr)
		r.Body = io.NopCloser(bytes.NewReader(body))
		return false
	}
	return true
}

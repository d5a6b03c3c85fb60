package phoenix

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/node/internal/respond"
	"github.com/notify-dev/notify/transport"
)

// Phoenix long-poll (the fallback phoenix.js takes when WebSockets are
// blocked): GET without a session token opens a session ({"status":410,
// "token":...}), GET with it polls (held up to the hold time, then 200 with
// messages or 204), POST with it sends messages (ndjson). A session lives on
// the owner of its user; a request that lands elsewhere is relayed there, so
// it works behind a round-robin balancer.
//
// Cost: a session is its socket state and its outbox; a poll is held by a
// net/http goroutine while it waits (a relayed one by one goroutine on each
// node). An idle WebSocket or SSE client has no goroutine; a long-poll client
// has one per poll in flight.

const (
	maxBody  = 1 << 20
	maxLines = 100 // phoenix.js batches at most 100 messages per POST
)

// session is one long-poll client.
type session struct {
	socket
	token string

	mu       sync.Mutex
	out      [][]byte // WebSocket frames of Phoenix messages, for the next poll
	outBytes int
	polls    int
	lastPoll time.Time
	cutCode  int // cut (slow consumer, closed): the reaper ends it with this code
	// refreshed: a refresh moved the session's expiry to until (zero:
	// never), so the token its polls carry may have expired.
	refreshed bool
	until     time.Time
	ended     bool          // takes nothing more; the next request gets 410
	wake      chan struct{} // size 1: messages arrived
	done      chan struct{} // closed when the session ends
}

var _ output = (*session)(nil)

// send queues a message for the next poll. It runs under hub and socket
// locks (delivery), so a session that overflows is only marked here: the
// reaper ends it, which leaves the hub.
func (s *session) send(frame []byte, _ bool, _ *transport.Batch) bool {
	s.mu.Lock()
	if s.ended || s.cutCode != 0 {
		s.mu.Unlock()
		return false
	}
	if s.outBytes+len(frame) > s.ep.cfg.SendQueueBytes {
		s.cutCode = transport.CloseSlowConsumer
		s.mu.Unlock()
		signal(s.ep.ending)
		return false
	}
	s.out = append(s.out, frame)
	s.outBytes += len(frame)
	s.mu.Unlock()
	signal(s.wake)
	return true
}

// close marks the session cut; like send it may run under hub locks, so the
// reaper ends it (within moments).
func (s *session) close(code int, _ string) {
	s.mu.Lock()
	if s.cutCode == 0 {
		s.cutCode = code
	}
	s.mu.Unlock()
	signal(s.ep.ending)
}

// setExpiry records a refresh: polls whose token expired are taken until
// t. A poll re-verifies its token, so a session has no timer of its own.
func (s *session) setExpiry(t time.Time) {
	s.mu.Lock()
	s.refreshed, s.until = true, t
	s.mu.Unlock()
}

// valid reports whether the session still stands although the token of
// its polls expired: NOTIFY_EXPIRE_CONNECTIONS=false checks it at the start
// only, and a refresh may have moved the expiry.
func (s *session) valid(now time.Time) bool {
	if s.ep.cfg.Accept.Expiry(now).IsZero() {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshed && (s.until.IsZero() || now.Before(s.until))
}

func (s *session) closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended || s.cutCode != 0
}

// take returns the queued messages, as the text a long-poll client reads.
func (s *session) takeLocked() []string {
	if len(s.out) == 0 {
		return nil
	}
	msgs := make([]string, len(s.out))
	for i, f := range s.out {
		msgs[i] = string(transport.FramePayload(f))
	}
	s.out, s.outBytes = nil, 0
	return msgs
}

// end ends the session with its cut code (or code when it was not cut): it
// leaves the hub, and its next request gets 410 so that phoenix.js
// reconnects. It must not run under hub locks.
func (s *session) endWith(code int) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	if s.cutCode != 0 {
		code = s.cutCode
	}
	s.ended = true
	s.out, s.outBytes = nil, 0
	close(s.done)
	s.mu.Unlock()
	s.ep.forget(s)
	s.ep.cfg.Hub.Remove(&s.Client, code, 0)
}

func (s *session) end() { s.endWith(transport.CloseGoingAway) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// reapable returns the sessions to end: cut ones, and those nobody polled
// for the idle time.
func (e *Endpoint) reapable(now time.Time) []*session {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*session
	for _, s := range e.sessions {
		s.mu.Lock()
		if s.cutCode != 0 || (s.polls == 0 && now.Sub(s.lastPoll) > e.cfg.LongPollIdle) {
			out = append(out, s)
		}
		s.mu.Unlock()
	}
	return out
}

func (e *Endpoint) forget(s *session) {
	e.mu.Lock()
	delete(e.sessions, s.token)
	e.mu.Unlock()
}

// tokens: the user's token is X-Phoenix-AuthToken or the first token query
// parameter; the session token is the last token parameter, which
// phoenix.js appends after its own params once it has one.
func (e *Endpoint) tokens(r *http.Request) (user, session string) {
	q := r.URL.Query()["token"]
	if h := r.Header.Get("X-Phoenix-AuthToken"); h != "" {
		if len(q) > 0 {
			session = q[len(q)-1]
		}
		return h, session
	}
	switch len(q) {
	case 0:
		return e.cfg.Accept.Token(r), ""
	case 1:
		return q[0], ""
	}
	return q[0], q[len(q)-1]
}

type status struct {
	Status   int      `json:"status"`
	Token    string   `json:"token,omitempty"`
	Messages []string `json:"messages,omitempty"`
}

// Statuses go in the body, as Phoenix sends them; the HTTP status is 200
// except for a refusal of a new session while draining, which phoenix.js
// treats as a failed request and retries (elsewhere, through the balancer).
func writeStatus(w http.ResponseWriter, st status) { respond.JSON(w, http.StatusOK, st) }

func refuseLongPoll(w http.ResponseWriter, code int, msg string) {
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		respond.Error(w, code, msg)
		return
	}
	writeStatus(w, status{Status: http.StatusForbidden})
}

// ServeLongPoll is GET and POST /pubsub/longpoll.
func (e *Endpoint) ServeLongPoll(w http.ResponseWriter, r *http.Request) {
	vsn1, ok := e.vsn(w, r)
	if !ok {
		return
	}
	userTok, sessTok := e.tokens(r)
	if sessTok == "" {
		e.open(w, r, userTok, vsn1)
		return
	}
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		if body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody)); err != nil {
			writeStatus(w, status{Status: http.StatusRequestEntityTooLarge})
			return
		}
	}
	claims, ok := e.pollClaims(userTok, sessTok)
	if !ok {
		e.cfg.Accept.Count(admission.RejectUnauthorized)
		if s := e.session(sessTok, ""); s != nil {
			s.endWith(transport.CloseTokenExpired)
		}
		writeStatus(w, status{Status: http.StatusForbidden})
		return
	}
	if e.cfg.Relay.RelayRequestToOwner(w, r, claims.UserID, body) {
		return
	}
	s := e.session(sessTok, claims.UserID)
	switch {
	case s == nil:
		// Unknown, ended, or another user's: gone. phoenix.js then opens a
		// new session and rejoins its channels.
		writeStatus(w, status{Status: http.StatusGone})
	case r.Method == http.MethodGet:
		e.poll(w, r, s)
	default:
		e.post(w, s, body)
	}
}

// pollClaims verifies the user token of a poll. An expired one is taken
// for a session that still stands (see session.valid): the session token
// is the proof, and the user is the session's.
func (e *Endpoint) pollClaims(userTok, sessTok string) (auth.Claims, bool) {
	claims, err := e.cfg.Accept.VerifyPhoenix(userTok)
	if err == nil {
		return claims, true
	}
	if s := e.session(sessTok, ""); s != nil && errors.Is(err, auth.ErrExpired) && s.valid(time.Now()) {
		return auth.Claims{UserID: s.User}, true
	}
	return auth.Claims{}, false
}

// open opens a session: the admission of every client endpoint, refusals
// in long-poll's format, relayed to the owner where the session must live.
func (e *Endpoint) open(w http.ResponseWriter, r *http.Request, userTok string, vsn1 bool) {
	if r.Method != http.MethodGet {
		writeStatus(w, status{Status: http.StatusBadRequest})
		return
	}
	a, ok := e.cfg.Accept.Admit(w, r, admission.Request{Token: userTok, Refuse: refuseLongPoll, Phoenix: true,
		Relay: func(w http.ResponseWriter, r *http.Request, user string) bool {
			return e.cfg.Relay.RelayRequestToOwner(w, r, user, nil)
		}})
	if !ok {
		return
	}
	var b [18]byte
	_, _ = rand.Read(b[:])
	s := &session{token: base64.RawURLEncoding.EncodeToString(b[:]), lastPoll: time.Now(),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.init(e, a, vsn1, hub.TransportLongPoll, s)
	if !e.cfg.Accept.AddClient(w, &s.Client, false, refuseLongPoll) {
		return
	}
	e.mu.Lock()
	e.sessions[s.token] = s
	e.mu.Unlock()
	e.cfg.Hub.Opened(&s.Client)
	e.cfg.Hub.Accepted(&s.Client)
	w.Header().Set("X-Notify-Node", e.cfg.Accept.NodeName())
	writeStatus(w, status{Status: http.StatusGone, Token: s.token})
}

// session finds an open session; user, when given, must be its user (a
// token of another user's session counts as unknown).
func (e *Endpoint) session(token, user string) *session {
	e.mu.Lock()
	s := e.sessions[token]
	e.mu.Unlock()
	if s == nil || (user != "" && s.User != user) {
		if s != nil {
			e.log.Warn("long-poll session token used by another user", "session_user", s.User, "user", user)
		}
		return nil
	}
	return s
}

// poll answers at once when messages wait, else holds the request until
// some arrive, the hold time passes, the client goes or the session ends.
func (e *Endpoint) poll(w http.ResponseWriter, r *http.Request, s *session) {
	s.mu.Lock()
	s.polls++
	s.lastPoll = time.Now()
	msgs := s.takeLocked()
	s.mu.Unlock()
	if len(msgs) == 0 {
		t := time.NewTimer(e.cfg.LongPollHold)
		select {
		case <-s.wake:
		case <-t.C:
		case <-s.done:
		case <-r.Context().Done():
		}
		t.Stop()
		s.mu.Lock()
		msgs = s.takeLocked()
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.polls--
	s.lastPoll = time.Now()
	ended := s.ended
	s.mu.Unlock()
	switch {
	case len(msgs) > 0:
		writeStatus(w, status{Status: http.StatusOK, Token: s.token, Messages: msgs})
	case ended:
		writeStatus(w, status{Status: http.StatusGone})
	default:
		writeStatus(w, status{Status: http.StatusNoContent, Token: s.token})
	}
}

// post runs the messages of a POST, one per line (phoenix.js sends
// application/x-ndjson batches).
func (e *Endpoint) post(w http.ResponseWriter, s *session, body []byte) {
	msgs, err := parseBody(s.vsn1, body, e.cfg.MaxMessageSize)
	switch {
	case errors.Is(err, errTooBig):
		s.endWith(transport.CloseTooBig)
		writeStatus(w, status{Status: http.StatusRequestEntityTooLarge})
		return
	case err != nil:
		// No ref to reply to: end the session, as the WebSocket closes.
		s.endWith(transport.CloseInvalidPayload)
		writeStatus(w, status{Status: http.StatusBadRequest})
		return
	}
	for _, m := range msgs {
		s.handle(m)
	}
	writeStatus(w, status{Status: http.StatusOK})
}

// errTooBig: a long-poll body line over NOTIFY_MAX_MESSAGE_SIZE, or more
// than maxLines messages.
var errTooBig = errors.New("long-poll body too big")

// parseBody reads a long-poll POST body: one message per line, blank lines
// skipped. A line that is not a Phoenix message is errMalformed.
func parseBody(vsn1 bool, body []byte, maxMessage int) ([]message, error) {
	var msgs []message
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 4096), maxBody)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if len(line) > maxMessage || len(msgs) == maxLines {
			return nil, errTooBig
		}
		m, err := decodeText(vsn1, line)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	if sc.Err() != nil {
		return nil, errTooBig // a line longer than the scanner's buffer
	}
	return msgs, nil
}

package phoenix

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/transport"
)

// refresh runs the event "refresh" on a joined topic, payload
// {"token": "<token>"}: a valid token for the socket's user moves its
// expiry (reply ok {"exp": <unix seconds>}, no exp for a token without
// one); a bad one is answered with an error and changes nothing; one for
// another user closes the socket with 4003.
func (s *socket) refresh(m message) {
	var p struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(m.payload, &p) != nil || p.Token == "" {
		s.reply(m, "error", reason{`refresh needs {"token": "<token>"}`})
		return
	}
	exp, err := s.ep.cfg.Accept.Refresh(s.User, p.Token, true)
	switch {
	case errors.Is(err, admission.ErrOtherUser):
		s.out.close(transport.CloseDisconnected, "token for another user")
	case err != nil:
		s.reply(m, "error", reason{err.Error()})
	default:
		s.out.setExpiry(exp)
		s.reply(m, "ok", expiry(exp))
	}
}

// expiry is the response of a refresh and the payload of "expiring".
func expiry(exp time.Time) any {
	if exp.IsZero() {
		return empty
	}
	return map[string]int64{"exp": exp.Unix()}
}

// expiring pushes "expiring" {"exp": ...} on every joined topic.
func (s *socket) expiring(exp time.Time) {
	payload, _ := json.Marshal(expiry(exp))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.joins {
		if j.pending == nil {
			s.out.send(frame(s.vsn1, message{joinRef: j.joinRef, topic: j.topic, event: "expiring", payload: payload}), true, nil)
		}
	}
}

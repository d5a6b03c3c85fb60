package admission

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrOtherUser: a connection sent a valid token for another user. The
// connection is then closed (4003): one socket never changes hands.
var ErrOtherUser = errors.New("the token is for another user")

// Expiry is when a connection admitted with the token's expiry exp closes:
// exp, or never with NOTIFY_EXPIRE_CONNECTIONS=false (the older services
// checked the token at connect only).
func (p *Pipeline) Expiry(exp time.Time) time.Time {
	if !p.cfg.ExpireConnections {
		return time.Time{}
	}
	return exp
}

// Refresh checks a token that user's open connection sent in-band and
// returns the connection's new expiry (zero: none). A token that does not
// verify leaves the connection as it was (the error says why, fit for the
// client); one for another user is ErrOtherUser. phoenix: the connection is
// a Phoenix socket, which may also send Phoenix.Tokens.
func (p *Pipeline) Refresh(user, token string, phoenix bool) (time.Time, error) {
	verify := p.Verify
	if phoenix {
		verify = p.VerifyPhoenix
	}
	claims, err := verify(token)
	switch {
	case err != nil:
		p.refreshes.invalid.Inc()
		return time.Time{}, fmt.Errorf("refresh: %w", err)
	case claims.UserID != user:
		p.refreshes.otherUser.Inc()
		return time.Time{}, ErrOtherUser
	}
	p.refreshes.ok.Inc()
	return p.Expiry(claims.ExpiresAt), nil
}

// refreshMetrics count in-band token refreshes by result.
type refreshMetrics struct{ ok, invalid, otherUser prometheus.Counter }

func newRefreshMetrics(reg prometheus.Registerer) (*refreshMetrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_token_refreshes_total",
		Help: "Tokens sent in-band by open connections, by result: ok (the expiry moved), invalid (refused, the connection stays), other_user (the connection was closed).",
	}, []string{"result"})
	m := &refreshMetrics{ok: vec.WithLabelValues("ok"), invalid: vec.WithLabelValues("invalid"), otherUser: vec.WithLabelValues("other_user")}
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, err
		}
	}
	return m, nil
}

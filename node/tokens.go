package node

import (
	"github.com/notify-dev/notify/auth"
	"github.com/notify-dev/notify/auth/phxtoken"
	"github.com/notify-dev/notify/node/internal/admission"
)

// phoenixTokens verifies the tokens of the Phoenix endpoints: Phoenix.Tokens
// (the Elixir service's) by their prefix, everything else as a JWT.
type phoenixTokens struct {
	jwt admission.Verifier
	phx *phxtoken.Verifier
}

var _ admission.Verifier = phoenixTokens{}

func (v phoenixTokens) Verify(token string) (auth.Claims, error) {
	if !phxtoken.Looks(token) {
		return v.jwt.Verify(token)
	}
	c, err := v.phx.Verify(token)
	if err != nil {
		return auth.Claims{}, err
	}
	return auth.Claims{UserID: c.UserID, ExpiresAt: c.ExpiresAt}, nil
}

// newPhoenixTokens is the Phoenix endpoints' verifier, nil (JWTs only)
// without NOTIFY_PHOENIX_SECRET_KEY_BASE.
func (n *Node) newPhoenixTokens(jwt admission.Verifier) (admission.Verifier, error) {
	if n.cfg.Tokens.PhoenixSecretKeyBase == "" {
		return nil, nil
	}
	phx, err := phxtoken.New(n.cfg.Tokens.phoenix())
	if err != nil {
		return nil, err
	}
	return phoenixTokens{jwt: jwt, phx: phx}, nil
}

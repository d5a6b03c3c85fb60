package notifyproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/notify-dev/notify/node/internal/admission"
	"github.com/notify-dev/notify/transport"
)

// maxRefreshFrame bounds a refresh frame: a token with room to spare.
const maxRefreshFrame = 64 << 10

// errRefreshFrame: a frame of kind refresh without a usable token.
var errRefreshFrame = errors.New(`a refresh frame is {"kind":"refresh","token":"<token>"}`)

// parseRefresh reads a client frame of /notify/ws. refresh reports whether
// it is a refresh frame {"kind":"refresh","token":"..."}; every other
// frame is ignored (the older service ignored them all). A refresh frame
// without a token string is err.
func parseRefresh(payload []byte) (token string, refresh bool, err error) {
	if !bytes.Contains(payload, []byte(`"refresh"`)) {
		return "", false, nil // the common case: no parse at all
	}
	var f struct {
		Kind  string          `json:"kind"`
		Token json.RawMessage `json:"token"`
	}
	if len(payload) > maxRefreshFrame || json.Unmarshal(payload, &f) != nil || f.Kind != "refresh" {
		return "", false, nil
	}
	if err := json.Unmarshal(f.Token, &token); err != nil || token == "" {
		return "", true, errRefreshFrame
	}
	return token, true, nil
}

// refresh answers a refresh frame of the connection: a valid token for the
// same user moves its expiry ({"kind":"refreshed","exp":...}), a bad one is
// answered with an error frame and changes nothing, one for another user
// closes the connection with 4003.
func (c *wsClient) refresh(conn *transport.Conn, payload []byte) {
	token, ok, err := parseRefresh(payload)
	switch {
	case !ok:
		return
	case err != nil:
		conn.Send(transport.TextFrame(errorJSON(err.Error())))
		return
	}
	exp, err := c.ep.cfg.Accept.Refresh(c.User, token, false)
	switch {
	case errors.Is(err, admission.ErrOtherUser):
		conn.Close(transport.CloseDisconnected, "token for another user")
	case err != nil:
		conn.Send(transport.TextFrame(errorJSON(err.Error())))
	default:
		conn.SetExpiry(exp)
		conn.Send(transport.TextFrame(expJSON("refreshed", exp)))
	}
}

// OnExpiring implements transport.ExpiryNotifier: the client is told, once
// per expiry, NOTIFY_REFRESH_NOTICE ahead, so that it refreshes in time.
func (c *wsClient) OnExpiring(conn *transport.Conn, exp time.Time) {
	conn.Send(transport.TextFrame(expJSON("expiring", exp)))
}

// expJSON is {"kind":"<kind>","exp":<unix seconds>}; exp is left out for a
// token without one (the connection no longer expires).
func expJSON(kind string, exp time.Time) []byte {
	b := append(append([]byte(`{"kind":"`), kind...), '"')
	if !exp.IsZero() {
		b = strconv.AppendInt(append(b, `,"exp":`...), exp.Unix(), 10)
	}
	return append(b, '}')
}

// errorJSON is {"kind":"error","error":{"message":"..."}}, the shape of the
// contract's refusals.
func errorJSON(msg string) []byte {
	m, _ := json.Marshal(msg)
	return append(append([]byte(`{"kind":"error","error":{"message":`), m...), "}}"...)
}

package transport

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/gobwas/ws"
)

// UpgradeError is a handshake refused before anything was written: the caller
// answers with Status and the message (a JSON error for notify).
type UpgradeError struct {
	Status int
	Msg    string
}

func (e *UpgradeError) Error() string { return e.Msg }

// CheckUpgrade validates the WebSocket handshake of r (RFC 6455 section 4.2.1)
// without writing anything, so the caller can refuse it in its own format and
// authenticate before upgrading.
func CheckUpgrade(r *http.Request) error {
	switch {
	case r.Method != http.MethodGet:
		return &UpgradeError{http.StatusMethodNotAllowed, "websocket handshake must use GET"}
	case !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket"):
		return &UpgradeError{http.StatusBadRequest, "websocket upgrade required"}
	// The header names in canonical form: Get copies any other spelling
	// into it, one allocation per call, on every handshake.
	case len(r.Header.Get("Sec-Websocket-Key")) != 24:
		return &UpgradeError{http.StatusBadRequest, "missing or invalid Sec-WebSocket-Key"}
	case r.Header.Get("Sec-Websocket-Version") != "13":
		return &UpgradeError{http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version (13 required)"}
	}
	return nil
}

// headerHasToken reports whether the comma-separated values of the header
// name (canonical, see CheckUpgrade) hold token, in any case. It allocates
// nothing: it runs for every handshake.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Upgrade completes a handshake that passed CheckUpgrade: it hijacks the HTTP
// connection and writes the 101 response with the extra header. It returns
// the raw connection and any bytes the client sent after its request that were
// already read, to be passed on to Attach.
func Upgrade(w http.ResponseWriter, r *http.Request, header http.Header) (net.Conn, []byte, error) {
	u := ws.HTTPUpgrader{Header: header}
	nc, rw, _, err := u.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	return nc, readAhead(rw.Reader), nil
}

// IsUpgradeError reports whether err is a handshake refusal and returns it.
func IsUpgradeError(err error) (*UpgradeError, bool) {
	var ue *UpgradeError
	ok := errors.As(err, &ue)
	return ue, ok
}

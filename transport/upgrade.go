package transport

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
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
	case !r.ProtoAtLeast(1, 1):
		return &UpgradeError{http.StatusBadRequest, "websocket handshake requires HTTP/1.1"}
	case r.Host == "":
		return &UpgradeError{http.StatusBadRequest, "missing Host header"}
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

// Upgrade completes a handshake: it checks it again (CheckUpgrade), hijacks
// the HTTP connection and returns it with any bytes the client sent after
// its request that were already read, and the 101 response with the extra
// header, not yet written. Pass all three to Attach, the response as the
// first of the first frames: the event loop writes it with them in one
// system call (one write less per handshake, and one read less for the
// client). A refusal by CheckUpgrade is returned before the hijack, for the
// caller to answer.
func Upgrade(w http.ResponseWriter, r *http.Request, header http.Header) (nc net.Conn, buffered, response []byte, err error) {
	if err := CheckUpgrade(r); err != nil {
		return nil, nil, nil, err
	}
	// net/http and the node's front clear the connection's deadlines when
	// they hand it over.
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, nil, nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	return nc, readAhead(rw.Reader), upgradeResponse(r.Header.Get("Sec-Websocket-Key"), header), nil
}

// acceptGUID is appended to the client's key for Sec-WebSocket-Accept
// (RFC 6455 section 4.2.2).
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const upgradeHead = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "

// upgradeResponse is the 101 response to a handshake with key (24 bytes,
// checked by CheckUpgrade), with header's fields in the order of their
// names. CR and LF in a value become spaces, as in http.Header.Write.
func upgradeResponse(key string, header http.Header) []byte {
	var in [24 + len(acceptGUID)]byte
	copy(in[copy(in[:], key):], acceptGUID)
	sum := sha1.Sum(in[:])
	size := len(upgradeHead) + base64.StdEncoding.EncodedLen(len(sum)) + 4
	for k, vs := range header {
		for _, v := range vs {
			size += len(k) + len(v) + 4
		}
	}
	b := make([]byte, 0, size)
	b = append(b, upgradeHead...)
	b = base64.StdEncoding.AppendEncode(b, sum[:])
	b = append(b, "\r\n"...)
	if len(header) <= 1 { // the common case: no order to keep, nothing to sort
		for k, vs := range header {
			b = appendField(b, k, vs)
		}
	} else {
		for _, k := range slices.Sorted(maps.Keys(header)) {
			b = appendField(b, k, header[k])
		}
	}
	return append(b, "\r\n"...)
}

// appendField appends a line "name: value" for each of vs.
func appendField(b []byte, name string, vs []string) []byte {
	for _, v := range vs {
		b = append(b, name...)
		b = append(b, ": "...)
		b = appendFieldValue(b, v)
		b = append(b, "\r\n"...)
	}
	return b
}

// appendFieldValue appends v with CR and LF replaced by spaces: a value
// cannot end the field early or add one.
func appendFieldValue(b []byte, v string) []byte {
	for {
		i := strings.IndexAny(v, "\r\n")
		if i < 0 {
			return append(b, v...)
		}
		b = append(b, v[:i]...)
		b = append(b, ' ')
		v = v[i+1:]
	}
}

// IsUpgradeError reports whether err is a handshake refusal and returns it.
func IsUpgradeError(err error) (*UpgradeError, bool) {
	var ue *UpgradeError
	ok := errors.As(err, &ue)
	return ue, ok
}

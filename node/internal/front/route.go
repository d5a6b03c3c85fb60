package front

import "bytes"

// route is where a connection's first request goes.
type route int

const (
	routeNone   route = iota // the connection closed or failed before its request line
	routeHTTP                // net/http
	routeDirect              // the front's direct route
)

// maxPath bounds a handshake path: the bytes peeked are len("GET ") + path +
// one byte (' ' or '?').
const maxPath = 64

// routeOf decides the route of a connection whose first bytes are b (all
// there are so far), or reports false when more bytes are needed to.
func routeOf(b []byte, paths []string) (route, bool) {
	const get = "GET "
	if !bytes.HasPrefix(b, []byte(get)) {
		if len(b) < len(get) && bytes.HasPrefix([]byte(get), b) {
			return routeNone, false
		}
		return routeHTTP, true
	}
	target := b[len(get):]
	undecided := false
	for _, p := range paths {
		switch {
		case len(target) > len(p) && string(target[:len(p)]) == p && (target[len(p)] == ' ' || target[len(p)] == '?'):
			return routeDirect, true
		case len(target) <= len(p) && p[:len(target)] == string(target):
			undecided = true // a prefix of p so far
		}
	}
	if undecided {
		return routeNone, false
	}
	return routeHTTP, true
}

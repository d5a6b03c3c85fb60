//go:build !unix

package front

import "net"

// peekRoute sends every connection to net/http where MSG_PEEK is not at
// hand.
func peekRoute(net.Conn, []string) route { return routeHTTP }

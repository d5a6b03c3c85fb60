package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
)

// RelayAuthHeader carries the signature of a client request that a node
// relays to the user's owner, beside X-Notify-Forwarded-By (which names the
// relaying node): "v1:<unix seconds>:<hex HMAC-SHA256>", keyed by the
// cluster secret. The name stays in a header of its own so that nodes of an
// older version, which read X-Notify-Forwarded-By as a bare name, still
// attribute the relays of newer ones during a rolling upgrade.
const RelayAuthHeader = "X-Notify-Forwarded-Auth"

// relayAuthLabel starts the signed text of a relay: a presence signature
// (whose text starts with the bare version) is never a relay signature, nor
// the other way round.
const relayAuthLabel = "notify relay " + peerAuthVersion

// Relay is what a relay signature covers: which node relays which request
// for which user. Binding the user and the handshake's Sec-WebSocket-Key
// means a header seen on one handshake is worth nothing on another, even
// within the skew: a client's key is random per handshake.
type Relay struct {
	Node   string // the relaying node, as X-Notify-Forwarded-By names it
	User   string // the user whose token the relaying node verified
	Method string // "" = GET
	Target string // path and query (URL.RequestURI)
	Key    string // Sec-WebSocket-Key; "" for requests that are no WebSocket handshake
	Body   []byte // the request's body; nil for a handshake
}

// SignRelay returns the RelayAuthHeader value for rl, signed now, or ""
// without a secret (the owner then takes the request for a client's).
func (a *PeerAuth) SignRelay(rl Relay) string {
	if a.secret == nil {
		return ""
	}
	ts := strconv.FormatInt(a.now().Unix(), 10)
	return peerAuthVersion + ":" + ts + ":" + hex.EncodeToString(a.relayMAC(ts, rl))
}

// VerifyRelay checks value, a RelayAuthHeader, against rl as this node
// sees the request. Its errors say why (no secret on this node, missing or
// malformed value, bad signature: another secret or another request, too
// old or from the future) and wrap ErrPeerAuth.
func (a *PeerAuth) VerifyRelay(value string, rl Relay) error {
	if a.secret == nil {
		return fmt.Errorf("%w: no cluster secret on this node: set NOTIFY_CLUSTER_SECRET or NOTIFY_GOSSIP_KEY", ErrPeerAuth)
	}
	if value == "" {
		return fmt.Errorf("%w: missing %s header", ErrPeerAuth, RelayAuthHeader)
	}
	ts, sig, err := parsePeerAuth(value)
	if err != nil {
		return fmt.Errorf("%w: %s header: %w", ErrPeerAuth, RelayAuthHeader, err)
	}
	if !hmac.Equal(sig, a.relayMAC(ts, rl)) {
		return fmt.Errorf("%w: bad relay signature (another cluster secret, or not this request's)", ErrPeerAuth)
	}
	return a.fresh(ts)
}

// relayMAC is the HMAC-SHA256, keyed by the secret, over the label, the
// timestamp, the fields of rl and the SHA-256 of its body. Each part is
// written as "<length>:<bytes>\n": a user id may hold any byte, newlines
// included, and must not be able to shift text from one field to the next.
func (a *PeerAuth) relayMAC(ts string, rl Relay) []byte {
	method := rl.Method
	if method == "" {
		method = http.MethodGet
	}
	bodySum := sha256.Sum256(rl.Body)
	m := hmac.New(sha256.New, a.secret)
	for _, part := range []string{relayAuthLabel, ts, rl.Node, rl.User, method, rl.Target, rl.Key, hex.EncodeToString(bodySum[:])} {
		fmt.Fprintf(m, "%d:%s\n", len(part), part)
	}
	return m.Sum(nil)
}
